import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createApiServer } from '../../src/api/api-server.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import type { Config } from '../../src/config/config.js';
import {
  readResults,
  removePrefixKeys,
  startReceiver,
  startTestWorker,
  testConfig,
  testContext,
  waitFor,
  type Receiver,
} from '../support/harness.js';

const run = promisify(execFile);
const SECRET = 'dlq-secret-Zq81';
const env = { ...process.env, ACTION_SECRET_DLQ_TOKEN: SECRET };

let config: Config;
let ctx: RelayContext;
let worker: Awaited<ReturnType<typeof startTestWorker>>;
let receiver: Receiver;
let api: FastifyInstance;
const logLines: string[] = [];
/** Paths answered 200; everything else answers 404 (dead at once). */
const healthy = new Set<string>();

function action(id: string) {
  return {
    id,
    name: id,
    endpoint: { url: receiver.url, path: `/${id}`, method: 'POST' },
    auth: { type: 'bearer', token: { env: 'ACTION_SECRET_DLQ_TOKEN' } },
    parameters: { n: { type: 'integer', required: true } },
    body: { n: '{{params.n}}' },
    retry: { maxAttempts: 2, backoff: { type: 'fixed', delayMs: 10, maxDelayMs: 10 } },
  };
}

async function killJobs(actionId: string, count: number): Promise<string[]> {
  const ids: string[] = [];
  for (let n = 0; n < count; n++) ids.push((await ctx.producer.enqueue({ actionId, params: { n } })).jobId);
  await waitFor(async () => (await Promise.all(ids.map((id) => ctx.deadLetters.get(id)))).every(Boolean), 10_000, 'dead letters');
  return ids;
}

async function deliveredReplays(): Promise<Record<string, string>[]> {
  return (await readResults(ctx)).filter((r) => r.outcome === 'delivered');
}

beforeAll(async () => {
  receiver = await startReceiver();
  receiver.handler = (r, res) => {
    const path = r.url.split('/')[1] ?? '';
    if (healthy.has(path)) res.writeHead(200).end('{}');
    else
      res
        .writeHead(404, { 'content-type': 'text/plain', 'x-echo-auth': String(r.headers.authorization) })
        .end(`nothing here for ${r.headers.authorization}`);
  };
  config = testConfig();
  ctx = await testContext(config, env);
  worker = await startTestWorker(config, env, logLines);
  api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
  for (const id of ['dl_a', 'dl_b', 'dl_c', 'dl_d', 'dl_e', 'dl_f']) await ctx.store.put(action(id));
});

afterAll(async () => {
  await worker.stop();
  await api.close();
  await ctx.close();
  await receiver.close();
  await removePrefixKeys(config);
});

describe('dead letters', () => {
  it('keeps a full record without secrets, and lists with filters and a cursor', async () => {
    const ids = await killJobs('dl_a', 3);
    const rec = await api.inject({ method: 'GET', url: `/v1/dlq/${ids[0]}` });
    expect(rec.statusCode).toBe(200);
    expect(rec.json()).toMatchObject({ jobId: ids[0], actionId: 'dl_a', reason: 'http_status', status: 404, job: { params: { n: 0 } } });
    expect(rec.json().attempts[0]).toMatchObject({
      attempt: 1,
      request: { method: 'POST', headers: { authorization: '***' } },
      response: { status: 404 },
    });
    // The receiver echoed the token in a header and the body: the record must not keep it.
    expect(rec.body).not.toContain(SECRET);
    expect(JSON.stringify(await readResults(ctx))).not.toContain(SECRET);
    expect(logLines.some((l) => l.includes('dead-lettered'))).toBe(true);
    expect(logLines.join('')).not.toContain(SECRET);

    const page1 = await api.inject({ method: 'GET', url: '/v1/dlq?actionId=dl_a&limit=2' });
    expect(page1.json().items).toHaveLength(2);
    const page2 = await api.inject({
      method: 'GET',
      url: `/v1/dlq?actionId=dl_a&limit=2&cursor=${encodeURIComponent(page1.json().nextCursor)}`,
    });
    expect(page2.json()).toMatchObject({ nextCursor: null });
    const listed = [...page1.json().items, ...page2.json().items].map((i: { jobId: string }) => i.jobId).sort();
    expect(listed).toEqual([...ids].sort());
    expect((await api.inject({ method: 'GET', url: '/v1/dlq?reason=timeout' })).json().items).toEqual([]);
  });

  it('dry run changes nothing; replay by id delivers with the current definition and removes the record', async () => {
    const [id] = await killJobs('dl_b', 1);
    const dry = await api.inject({ method: 'POST', url: '/v1/dlq/replay', payload: { jobIds: [id], dryRun: true } });
    expect(dry.json()).toEqual({ matched: 1, jobIds: [id] });
    expect(await ctx.deadLetters.get(id as string)).not.toBeNull();

    healthy.add('dl_b');
    const res = await api.inject({ method: 'POST', url: '/v1/dlq/replay', payload: { jobIds: [id] } });
    expect(res.json()).toMatchObject({ replayed: 1 });
    const newId = res.json().jobIds[0] as string;
    expect(newId).not.toBe(id);
    expect(await ctx.deadLetters.get(id as string)).toBeNull();
    const result = await waitFor(async () => (await deliveredReplays()).find((r) => r.jobId === newId), 10_000, 'replayed delivery');
    expect(result.attempts).toBe('1');
    expect((await ctx.queue.getJob(newId))?.data.replayOf).toBe(id);
  });

  it("a replay keeps the dead job's idempotency key, its id when none was given, and is not deduplicated away", async () => {
    const [keyless] = await killJobs('dl_e', 1);
    const keyed = (await ctx.producer.enqueue({ actionId: 'dl_e', params: { n: 1 }, idempotencyKey: 'order-e1' })).jobId;
    await waitFor(() => ctx.deadLetters.get(keyed), 10_000, 'keyed dead letter');
    const before = receiver.requests.length;

    healthy.add('dl_e');
    const res = await api.inject({ method: 'POST', url: '/v1/dlq/replay', payload: { jobIds: [keyless, keyed] } });
    expect(res.json()).toMatchObject({ replayed: 2 });
    const [newKeyless, newKeyed] = res.json().jobIds as string[];
    const results = await waitFor(
      async () => {
        const delivered = await deliveredReplays();
        const a = delivered.find((r) => r.jobId === newKeyless);
        const b = delivered.find((r) => r.jobId === newKeyed);
        return a && b ? { a, b } : undefined;
      },
      10_000,
      'both replays delivered',
    );
    expect(results.a).toMatchObject({ replayOf: keyless, idempotencyKey: keyless });
    expect(results.b).toMatchObject({ replayOf: keyed, idempotencyKey: 'order-e1' });
    const sent = receiver.requests
      .slice(before)
      .filter((r) => r.url === '/dl_e')
      .map((r) => String(r.headers['idempotency-key']));
    expect(sent.sort()).toEqual([keyless, 'order-e1'].sort());
  });

  it('two replays of one dead letter at once add one job, delivered once', async () => {
    const [dead] = await killJobs('dl_f', 1);
    healthy.add('dl_f');
    const replay = () => api.inject({ method: 'POST', url: '/v1/dlq/replay', payload: { jobIds: [dead] } });
    const answers = (await Promise.all([replay(), replay()])).map((r) => r.json() as { replayed: number; jobIds: string[] });
    // Both found the record (they ran together) or the second found it gone: one new job either way.
    const ids = answers.flatMap((a) => a.jobIds);
    expect(new Set(ids).size).toBe(1);
    await waitFor(async () => (await deliveredReplays()).some((r) => r.replayOf === dead), 10_000, 'the replay delivered');
    await new Promise((r) => setTimeout(r, 500)); // a second job, were there one, would be delivered by now
    expect((await deliveredReplays()).filter((r) => r.replayOf === dead).map((r) => r.jobId)).toEqual([ids[0]]);
    expect(receiver.requests.filter((r) => r.url === '/dl_f')).toHaveLength(2); // the dead attempt, then the replay
  });

  it('purge removes only what its filter names; replay --all from the CLI delivers the rest', async () => {
    // Its own dead letters: the test runs alone too (`-t`), not only after the ones above.
    await killJobs('dl_d', 3);
    const a = await killJobs('dl_c', 2);
    const before = await ctx.redis.zcard(ctx.keys.dlq);
    const purged = await api.inject({ method: 'POST', url: '/v1/dlq/purge', payload: { filter: { actionId: 'dl_c' } } });
    expect(purged.json()).toEqual({ purged: 2 });
    expect(await ctx.redis.zcard(ctx.keys.dlq)).toBe(before - 2);
    for (const id of a) expect(await ctx.deadLetters.get(id)).toBeNull();

    // What is left: these three, and the three of dl_a when the first test ran before.
    const left = before - 2;
    healthy.add('dl_a');
    healthy.add('dl_d');
    const cliEnv = { ...env, REDIS_URL: config.REDIS_URL, ACTION_RELAY_PREFIX: config.ACTION_RELAY_PREFIX, LOG_LEVEL: 'silent' };
    const dry = await run(process.execPath, ['--import', 'tsx', 'workers/action-relay.ts', 'dlq', 'replay', '--all', '--dry-run'], {
      env: cliEnv,
    });
    expect(dry.stdout).toContain(`would replay ${left} job(s)`);
    const out = await run(process.execPath, ['--import', 'tsx', 'workers/action-relay.ts', 'dlq', 'replay', '--all', '--rate', '100/s'], {
      env: cliEnv,
    });
    // The mapping on stdout (dead id, new id), the summary on stderr.
    expect(out.stdout.trim().split('\n')).toHaveLength(left + 1);
    expect(out.stderr).toContain(`replayed ${left} job(s) spread at 100/s`);
    expect(await ctx.redis.zcard(ctx.keys.dlq)).toBe(0);
    await waitFor(
      async () => (await deliveredReplays()).filter((r) => r.actionId === 'dl_d').length === 3,
      10_000,
      'three replayed deliveries',
    );
  });

  it('refuses a malformed since or until with a 400 naming the field, before reading anything', async () => {
    const list = await api.inject({ method: 'GET', url: '/v1/dlq?since=garbage' });
    expect(list.statusCode).toBe(400);
    expect(list.json()).toEqual({
      error: {
        code: 'validation_failed',
        message: expect.any(String),
        details: [{ path: 'since', message: expect.stringContaining('ISO-8601') }],
      },
    });
    const replay = await api.inject({ method: 'POST', url: '/v1/dlq/replay', payload: { filter: { actionId: 'dl_a', until: 'garbage' } } });
    expect(replay.statusCode).toBe(400);
    expect(replay.json().error).toMatchObject({ code: 'validation_failed', details: [{ path: 'filter.until' }] });
    const purge = await api.inject({ method: 'POST', url: '/v1/dlq/purge', payload: { filter: { since: '2024-13-45' } } });
    expect(purge.statusCode).toBe(400);
    expect(purge.json().error).toMatchObject({ code: 'validation_failed', details: [{ path: 'filter.since' }] });
  });

  it('refuses a malformed cursor with a 400 naming it, and still pages with the cursors it hands out', async () => {
    for (const cursor of ['garbage', ':dl_x', 'abc:dl_x', '12:']) {
      const list = await api.inject({ method: 'GET', url: `/v1/dlq?cursor=${encodeURIComponent(cursor)}` });
      expect(list.statusCode, cursor).toBe(400);
      expect(list.json(), cursor).toEqual({
        error: {
          code: 'validation_failed',
          message: expect.any(String),
          details: [{ path: 'cursor', message: expect.stringContaining('nextCursor') }],
        },
      });
    }
    await expect(ctx.deadLetters.list({}, 1, 'garbage')).rejects.toMatchObject({ code: 'validation_failed' });

    await ctx.store.put(action('dl_cursor'));
    const ids = await killJobs('dl_cursor', 3);
    const seen: string[] = [];
    let cursor = '';
    do {
      const page = await api.inject({ method: 'GET', url: `/v1/dlq?actionId=dl_cursor&limit=1&cursor=${encodeURIComponent(cursor)}` });
      expect(page.statusCode).toBe(200);
      seen.push(...page.json().items.map((i: { jobId: string }) => i.jobId));
      cursor = page.json().nextCursor ?? '';
    } while (cursor);
    expect(seen.sort()).toEqual([...ids].sort());
    await ctx.deadLetters.remove(ids);
  });

  it('filters by time window and trims by age and by count', async () => {
    const ids = await killJobs('dl_c', 3);
    const recs = await Promise.all(ids.map((id) => ctx.deadLetters.get(id)));
    const newest = Math.max(...recs.map((r) => Date.parse(r?.failedAt ?? '')));
    const future = await api.inject({ method: 'GET', url: `/v1/dlq?since=${newest + 1}` });
    expect(future.json().items).toEqual([]);
    const window = await api.inject({ method: 'GET', url: `/v1/dlq?actionId=dl_c&until=${new Date(newest).toISOString()}` });
    expect(window.json().items.length).toBe(3);

    const total = await ctx.redis.zcard(ctx.keys.dlq);
    expect(await ctx.deadLetters.trim(86_400_000, total - 1)).toBe(1);
    expect(await ctx.redis.zcard(ctx.keys.dlq)).toBe(total - 1);
    expect(await ctx.redis.hlen(ctx.keys.dlqRecords)).toBe(total - 1);
    expect(await ctx.deadLetters.trim(0, 1_000_000, newest + 1)).toBe(total - 1);
    expect(await ctx.redis.zcard(ctx.keys.dlq)).toBe(0);
  });
});
