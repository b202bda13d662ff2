import { beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createApiServer } from '../../src/api/api-server.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import type { JobStatus } from '../../src/queue/job-status.js';
import {
  removePrefixKeys,
  startReceiver,
  startTestWorker,
  testConfig,
  testContext,
  trackRuns,
  waitFor,
  type Receiver,
} from '../support/harness.js';

/*
 * Several pollers hammer GET /v1/jobs/:id while a worker process delivers jobs of every kind,
 * the way a journey engine deciding its next step would. Every answer is recorded; then each job's
 * sequence of answers must follow the job's life, and its terminal answer must agree with its
 * results entry.
 */

type Kind = 'ok' | 'flaky' | 'bad' | 'down' | 'replay';
const KINDS: Kind[] = ['ok', 'flaky', 'bad', 'down', 'replay'];
const JOBS = 1000;
const POLLERS = 4;
/** GETs each poller keeps in flight. */
const POLLER_CONCURRENCY = 12;
const MAX_ATTEMPTS = 3;
/** Jobs enqueued at a time. */
const WAVE = 200;

/** What each kind must end as. */
const EXPECTED: Record<Kind | 'replayed', { state: 'delivered' | 'dead'; attempts: number; status: number }> = {
  ok: { state: 'delivered', attempts: 1, status: 200 },
  flaky: { state: 'delivered', attempts: 2, status: 200 },
  bad: { state: 'dead', attempts: 1, status: 400 },
  down: { state: 'dead', attempts: MAX_ATTEMPTS, status: 503 },
  replay: { state: 'dead', attempts: 1, status: 400 },
  replayed: { state: 'delivered', attempts: 1, status: 200 },
};

interface Observation {
  code: number;
  body: Partial<JobStatus>;
}

const { cleanups } = trackRuns();
let receiver: Receiver;
/** Idempotency keys of `replay` jobs already answered once (400): the replay's request gets 200. */
const refusedOnce = new Set<string>();

beforeAll(async () => {
  receiver = await startReceiver();
  receiver.handler = (r, res) => {
    const [path, query] = r.url.slice(1).split('?');
    const attempt = Number(new URLSearchParams(query).get('attempt'));
    const key = String(r.headers['idempotency-key']);
    let status = 200;
    if (path === 'flaky' && attempt === 1) status = 503;
    else if (path === 'bad') status = 400;
    else if (path === 'down') status = 503;
    else if (path === 'replay' && !refusedOnce.has(key)) {
      refusedOnce.add(key);
      status = 400;
    }
    res.writeHead(status, { 'content-type': 'application/json' }).end('{}');
  };
  cleanups.push(() => receiver.close());
});

/** The life a poller may observe: no terminal answer before the end, nothing after it but replayedAs. */
function violations(kind: Kind | 'replayed', seen: Observation[], replayedAs: string | undefined): string[] {
  const out: string[] = [];
  const expected = EXPECTED[kind];
  let attempts = 0;
  let terminal: Partial<JobStatus> | undefined;
  for (const { code, body } of seen) {
    if (code !== 200) {
      out.push(`answered ${code}`);
      continue;
    }
    if ((body.attempts ?? 0) < attempts) out.push(`attempts went down ${attempts} -> ${body.attempts}`);
    attempts = body.attempts ?? 0;
    const state = body.state;
    if (terminal) {
      const same =
        state === terminal.state &&
        body.attempts === terminal.attempts &&
        body.error?.reason === terminal.error?.reason &&
        body.error?.status === terminal.error?.status &&
        body.result?.status === terminal.result?.status;
      if (!same) out.push(`${terminal.state}:${terminal.attempts} then ${state}:${body.attempts}`);
      if (terminal.replayedAs && body.replayedAs !== terminal.replayedAs) out.push('replayedAs lost');
      terminal = body;
      continue;
    }
    if (state === 'delivered' || state === 'dead') {
      if (state !== expected.state || body.attempts !== expected.attempts) {
        out.push(`ended ${state}:${body.attempts} (${body.error?.reason ?? ''}), expected ${expected.state}:${expected.attempts}`);
      }
      const status = state === 'delivered' ? body.result?.status : body.error?.status;
      if (status !== expected.status) out.push(`ended with status ${status}, expected ${expected.status}`);
      terminal = body;
    } else if (state !== 'waiting' && state !== 'delayed' && state !== 'active') {
      out.push(`unknown state ${String(state)}`);
    }
  }
  if (!terminal) out.push('never seen ended');
  if (replayedAs !== undefined && terminal?.replayedAs !== replayedAs) out.push(`replayedAs ${terminal?.replayedAs} != ${replayedAs}`);
  return out;
}

describe('job status under concurrent polling', () => {
  it(`${POLLERS} pollers, ${JOBS} jobs of every kind: no impossible transition, every end agrees with the results stream`, async () => {
    const config = testConfig();
    const ctx = await testContext(config);
    const sender = createHttpSender({ guard: ctx.egress });
    const api: FastifyInstance = await createApiServer({ ctx, sender });
    const base = await api.listen({ port: 0, host: '127.0.0.1' });
    cleanups.push(async () => {
      await api.close();
      await sender.close();
      await ctx.close();
    });
    cleanups.push(() => removePrefixKeys(config));

    await ctx.store.put({
      id: 'poll',
      name: 'polled',
      endpoint: { url: receiver.url, path: '/{{params.kind}}', method: 'POST', query: { attempt: '{{job.attempt}}' } },
      parameters: { kind: { type: 'string', required: true }, n: { type: 'integer' } },
      body: { n: '{{params.n}}' },
      retry: { maxAttempts: MAX_ATTEMPTS, backoff: { type: 'fixed', delayMs: 5, maxDelayMs: 5 } },
    });
    // The worker on connections of its own, as its own process would have.
    const worker = await startTestWorker(config);
    cleanups.push(() => worker.stop());

    const kindOf = new Map<string, Kind | 'replayed'>();
    const tracked: string[] = [];
    const jobs = Array.from({ length: JOBS }, (_, n) => {
      const kind = KINDS[n % KINDS.length] as Kind;
      return { actionId: 'poll', params: { kind, n }, ...(kind === 'replay' ? { idempotencyKey: `replay-${n}` } : {}) };
    });

    // Every answer each poller got, per job, in the order it got them.
    const seen = Array.from({ length: POLLERS }, () => new Map<string, Observation[]>());
    const replayedAs = new Map<string, string>();
    // A poller leaves a job alone once it has seen it ended (and, for a replayed one, once the
    // replay is made) a few times: a later change would be an impossible transition too.
    const endedSeen = Array.from({ length: POLLERS }, () => new Map<string, number>());
    const settled = (body: Partial<JobStatus>, id: string) =>
      (body.state === 'delivered' || body.state === 'dead') && (kindOf.get(id) !== 'replay' || replayedAs.has(id));
    const doneFor = (p: number, id: string) => ((endedSeen[p] as Map<string, number>).get(id) ?? 0) >= 3;
    let stop = false;
    const transportErrors: string[] = [];
    const poller = async (p: number) => {
      const mine = seen[p] as Map<string, Observation[]>;
      const ended = endedSeen[p] as Map<string, number>;
      while (!stop) {
        const ids = tracked.filter((id) => !doneFor(p, id));
        for (let i = 0; i < ids.length && !stop; i += POLLER_CONCURRENCY) {
          await Promise.all(
            ids.slice(i, i + POLLER_CONCURRENCY).map(async (id) => {
              let res: Response;
              try {
                res = await fetch(`${base}/v1/jobs/${id}`);
              } catch (err: unknown) {
                // A connection the test's client lost says nothing of the job: noted, not judged.
                transportErrors.push(String((err as Error).cause ?? err));
                return;
              }
              const body = (await res.json()) as Partial<JobStatus>;
              const list = mine.get(id);
              if (list) list.push({ code: res.status, body });
              else mine.set(id, [{ code: res.status, body }]);
              if (settled(body, id)) ended.set(id, (ended.get(id) ?? 0) + 1);
            }),
          );
        }
        // Nothing left to read until the next wave or replay: no busy loop.
        await new Promise((r) => (ids.length === 0 ? setTimeout(r, 10) : setImmediate(r)));
      }
    };

    // The journey engine's side: reads the results stream and replays the dead `replay` jobs as they die.
    const entries = new Map<string, Record<string, string>>();
    let lastId = '-';
    const follow = async () => {
      while (!stop) {
        const batch = (await ctx.redis.xrange(ctx.keys.results, lastId === '-' ? '-' : `(${lastId}`, '+', 'COUNT', 500)) as [
          string,
          string[],
        ][];
        const toReplay: string[] = [];
        for (const [id, f] of batch) {
          lastId = id;
          const e: Record<string, string> = {};
          for (let i = 0; i < f.length; i += 2) e[f[i] as string] = f[i + 1] as string;
          const jobId = e.jobId as string;
          if (entries.has(jobId)) throw new Error(`two results entries for ${jobId}`);
          entries.set(jobId, e);
          if (kindOf.get(jobId) === 'replay' && e.outcome === 'dead') toReplay.push(jobId);
        }
        if (toReplay.length > 0) {
          const res = await fetch(`${base}/v1/dlq/replay`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ jobIds: toReplay }),
          });
          const answer = (await res.json()) as { replayed: number; replays: { from: string; jobId: string }[] };
          expect(answer.replayed).toBe(toReplay.length);
          for (const m of answer.replays ?? []) {
            replayedAs.set(m.from, m.jobId);
            kindOf.set(m.jobId, 'replayed');
            tracked.push(m.jobId);
          }
        }
        if (batch.length === 0) await new Promise((r) => setTimeout(r, 20));
      }
    };

    const running = [...Array.from({ length: POLLERS }, (_, p) => poller(p)), follow()];
    // In waves, so that the pollers' rounds stay short and each job is read often around its end.
    const allDone = (expected: number) => tracked.length === expected && tracked.every((id) => seen.every((_, p) => doneFor(p, id)));
    for (let i = 0; i < jobs.length; i += WAVE) {
      const wave = jobs.slice(i, i + WAVE);
      const results = await ctx.producer.enqueueMany(wave);
      results.forEach((r, k) => {
        if (!('jobId' in r)) throw new Error(`enqueue refused: ${JSON.stringify(r)}`);
        kindOf.set(r.jobId, wave[k]?.params.kind as Kind);
        tracked.push(r.jobId);
      });
      const expected = ((i + wave.length) * (KINDS.length + 1)) / KINDS.length;
      await waitFor(() => allDone(expected), 60_000, `every job of wave ${i / WAVE + 1} ended and seen so by every poller`);
    }
    stop = true;
    await Promise.all(running);

    const problems = new Map<string, number>();
    const note = (what: string) => problems.set(what, (problems.get(what) ?? 0) + 1);
    let observations = 0;
    for (const [id, kind] of kindOf) {
      const entry = entries.get(id);
      if (!entry) note('no results entry');
      for (const mine of seen) {
        const list = mine.get(id) ?? [];
        observations += list.length;
        for (const v of violations(kind, list, replayedAs.get(id))) note(v.replace(/\d+ms|[0-9a-f-]{36}/g, '…'));
        // The terminal answer says what the results entry says.
        const last = list.at(-1)?.body;
        if (entry && last && (last.state === 'delivered' || last.state === 'dead')) {
          const status = last.state === 'delivered' ? last.result?.status : last.error?.status;
          const agrees =
            entry.outcome === last.state &&
            entry.attempts === String(last.attempts) &&
            entry.status === String(status ?? '') &&
            (last.state === 'delivered' || entry.reason === last.error?.reason);
          if (!agrees) note('disagrees with its results entry');
        }
      }
      if (entry && kind === 'replayed') {
        const from = [...replayedAs].find(([, to]) => to === id)?.[0];
        if (entry.replayOf !== from) note('replay entry without replayOf');
      }
      if (entry && kind !== 'replayed' && kind !== 'replay' && entry.idempotencyKey !== id) note('entry without idempotencyKey');
    }
    // Printed for the record: how many answers were checked and what went wrong.
    console.log(
      `job status pollers: ${observations} answers over ${kindOf.size} jobs (${transportErrors.length} lost connections); problems: ${JSON.stringify(Object.fromEntries(problems))}`,
    );
    expect(Object.fromEntries(problems)).toEqual({});
    expect(replayedAs.size).toBe(JOBS / KINDS.length);
  }, 180_000);
});
