import { describe, expect, it } from 'vitest';
import type { RelayContext } from '../../src/context/relay-context.js';
import { kill, readResults, setupRun, spawnWorker, trackRuns, waitFor, type Receiver } from '../support/harness.js';

/*
 * Per-key ordering through real worker processes: what the third party sees. The receiver logs
 * every request and every 2xx it answers in one sequence (it is single-threaded, so the sequence
 * is the order things happened); for each key, job n's first request must come after job n - 1
 * was answered 2xx, whatever retried, which process ran what, or which process was killed.
 */

const { children, cleanups } = trackRuns();

type Event = { kind: 'request' | 'ok'; key: string; seq: number };

/** Answers 2xx after `delayMs`, except a 503 to the first attempt of the jobs `fails` picks. */
function orderedReceiver(receiver: Receiver, fails: (key: string, seq: number) => boolean, delayMs = 0): Event[] {
  const events: Event[] = [];
  const seen = new Set<string>();
  receiver.handler = (req, res) => {
    const { key, seq } = JSON.parse(req.body) as { key: string; seq: number };
    events.push({ kind: 'request', key, seq });
    const first = !seen.has(`${key}/${seq}`);
    seen.add(`${key}/${seq}`);
    if (first && fails(key, seq)) {
      res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":"busy"}');
      return;
    }
    const answer = () => {
      events.push({ kind: 'ok', key, seq });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    };
    if (delayMs > 0) setTimeout(answer, delayMs);
    else answer();
  };
  return events;
}

/** Every place where a job's first request came before its predecessor of the key was answered 2xx. */
function orderViolations(events: Event[], keys: number, perKey: number): string[] {
  const okAt = new Map<string, number>();
  const firstAt = new Map<string, number>();
  events.forEach((e, i) => {
    const id = `${e.key}/${e.seq}`;
    if (e.kind === 'ok' && !okAt.has(id)) okAt.set(id, i);
    if (e.kind === 'request' && !firstAt.has(id)) firstAt.set(id, i);
  });
  const bad: string[] = [];
  for (let k = 0; k < keys; k++) {
    for (let n = 1; n < perKey; n++) {
      const prevOk = okAt.get(`k${k}/${n - 1}`);
      const first = firstAt.get(`k${k}/${n}`);
      if (first === undefined) bad.push(`k${k}/${n} never requested`);
      else if (prevOk === undefined || prevOk > first) bad.push(`k${k}/${n} sent before k${k}/${n - 1} succeeded`);
    }
  }
  return bad;
}

async function orderedRun(ctx: RelayContext, receiver: Receiver, keys: number, perKey: number) {
  await ctx.store.put({
    id: 'crm',
    name: 'crm update',
    endpoint: { url: receiver.url, path: '/profiles', method: 'POST' },
    parameters: { key: { type: 'string', required: true }, seq: { type: 'integer', required: true } },
    body: { key: '{{params.key}}', seq: '{{params.seq}}' },
    retry: { maxAttempts: 5, backoff: { type: 'fixed', delayMs: 150 } },
  });
  // Job j is job j / keys of key j % keys: every key's jobs are interleaved with the others'.
  const jobs = Array.from({ length: keys * perKey }, (_, j) => {
    const key = `k${j % keys}`;
    const seq = Math.floor(j / keys);
    return { actionId: 'crm', params: { key, seq }, orderingKey: key };
  });
  const ids: string[] = [];
  for (let i = 0; i < jobs.length; i += 1000) {
    for (const r of await ctx.producer.enqueueMany(jobs.slice(i, i + 1000))) {
      if (!('jobId' in r)) throw new Error(JSON.stringify(r));
      ids.push(r.jobId);
    }
  }
  return ids;
}

async function delivered(ctx: RelayContext, n: number, timeoutMs: number) {
  return waitFor(
    async () => {
      const entries = await readResults(ctx);
      return entries.length >= n ? entries : undefined;
    },
    timeoutMs,
    `${n} results entries`,
  );
}

describe('per-key ordering', () => {
  it(
    'two worker processes, 20 keys × 30 jobs, every 7th first attempt answered 503: each key in order, all 600 delivered',
    { timeout: 60_000 },
    async () => {
      const { receiver, config, ctx } = await setupRun(cleanups);
      const KEYS = 20;
      const PER_KEY = 30;
      // Job j (in enqueue order over all keys) fails its first attempt when j + 1 is a multiple of 7.
      const events = orderedReceiver(receiver, (key, seq) => (seq * KEYS + Number(key.slice(1)) + 1) % 7 === 0);
      spawnWorker(config, children, { WORKER_CONCURRENCY: '16' });
      spawnWorker(config, children, { WORKER_CONCURRENCY: '16' });
      const ids = await orderedRun(ctx, receiver, KEYS, PER_KEY);
      expect(new Set(ids).size).toBe(KEYS * PER_KEY);

      const entries = await delivered(ctx, KEYS * PER_KEY, 50_000);
      expect(entries.filter((e) => e.outcome === 'delivered')).toHaveLength(KEYS * PER_KEY);
      expect(new Set(entries.map((e) => e.jobId))).toEqual(new Set(ids));
      // The 503s happened and were retried: 85 jobs took two attempts.
      expect(entries.filter((e) => e.attempts === '2')).toHaveLength(Math.floor((KEYS * PER_KEY) / 7));
      expect(events.filter((e) => e.kind === 'request')).toHaveLength(KEYS * PER_KEY + Math.floor((KEYS * PER_KEY) / 7));
      expect(orderViolations(events, KEYS, PER_KEY)).toEqual([]);
      // Nothing of the lines is left behind.
      expect(await ctx.redis.hlen(ctx.keys.orderingJobs)).toBe(0);
      expect(await ctx.redis.exists(ctx.keys.orderingLine('crm', 'k0'))).toBe(0);
    },
  );

  it('keeps each key in order through a SIGKILL of a worker in the middle of the run', { timeout: 60_000 }, async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    const KEYS = 10;
    const PER_KEY = 30;
    const events = orderedReceiver(receiver, (_key, seq) => seq % 11 === 5, 5);
    const victim = spawnWorker(config, children, { WORKER_CONCURRENCY: '16' });
    spawnWorker(config, children, { WORKER_CONCURRENCY: '16' });
    const ids = await orderedRun(ctx, receiver, KEYS, PER_KEY);

    await waitFor(() => events.filter((e) => e.kind === 'ok').length >= 100, 30_000, '100 deliveries');
    await kill(victim, 'SIGKILL');
    spawnWorker(config, children, { WORKER_CONCURRENCY: '16' });

    const entries = await delivered(ctx, KEYS * PER_KEY, 55_000);
    // Each job ended exactly once, delivered.
    expect(entries).toHaveLength(KEYS * PER_KEY);
    expect(new Set(entries.map((e) => e.jobId))).toEqual(new Set(ids));
    expect(entries.every((e) => e.outcome === 'delivered')).toBe(true);
    expect(orderViolations(events, KEYS, PER_KEY)).toEqual([]);
  });
});
