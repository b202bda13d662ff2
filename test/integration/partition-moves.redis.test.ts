import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createApiServer } from '../../src/api/api-server.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import type { Config } from '../../src/config/config.js';
import { partitionIndex } from '../../src/redis/redis-connection.js';
import { createResultsReader, type ResultEntry } from '../../src/queue/results-reader.js';
import { removePrefixKeys, startReceiver, startTestWorker, testConfig, testContext, waitFor, type Receiver } from '../support/harness.js';

/*
 * QUEUE_PARTITIONS=3 on one Redis. A job's partition is that of its action's rate-limit
 * key, which by default is the endpoint's host:port: two loopback receivers on ports that hash to
 * different partitions stand for "the action's URL host changed".
 */
const PARTITIONS = 3;

let config: Config;
let ctx: RelayContext;
let api: FastifyInstance;
const receivers: Receiver[] = [];
/** Two receivers whose host:port land in different partitions. */
let recvA: Receiver;
let recvB: Receiver;
const workers: Awaited<ReturnType<typeof startTestWorker>>[] = [];

/** Whether stream id a is at or after b. */
const idNotBefore = (a: string, b: string) => {
  const [am, as] = a.split('-').map(BigInt) as [bigint, bigint];
  const [bm, bs] = b.split('-').map(BigInt) as [bigint, bigint];
  return am > bm || (am === bm && as >= bs);
};
const hostPort = (r: Receiver) => new URL(r.url).host;
const partOf = (key: string) => partitionIndex(key, PARTITIONS);

async function startWorker() {
  const w = await startTestWorker(config);
  workers.push(w);
  return w;
}

async function stopWorkers() {
  for (const w of workers.splice(0)) await w.stop();
}

async function resultsOf(partition: number): Promise<Record<string, string>[]> {
  const key = ctx.keys.partitions[partition]?.results as string;
  const entries = (await ctx.redis.xrange(key, '-', '+')) as [string, string[]][];
  return entries.map(([, f]) => Object.fromEntries(Array.from({ length: f.length / 2 }, (_, i) => [f[2 * i], f[2 * i + 1]])));
}

async function allResults(): Promise<Record<string, string>[]> {
  const out: Record<string, string>[] = [];
  for (let p = 0; p < PARTITIONS; p++) out.push(...(await resultsOf(p)));
  return out;
}

function action(id: string, url: string, extra: Record<string, unknown> = {}) {
  return {
    id,
    name: id,
    endpoint: { url, path: `/${id}/{{params.n}}`, method: 'POST' },
    parameters: { n: { type: 'integer', required: true } },
    body: { n: '{{params.n}}' },
    retry: { maxAttempts: 1 },
    ...extra,
  };
}

/** Waits until the producer's cached copy of the action has this rate-limit key (a put publishes the change). */
async function limitKeyIs(actionId: string, key: string) {
  await waitFor(async () => (await ctx.store.getCompiled(actionId))?.limitKey === key, 5_000, `${actionId} limit key ${key}`);
}

beforeAll(async () => {
  // Receivers until two of them hash to different partitions.
  for (;;) {
    const r = await startReceiver();
    receivers.push(r);
    const seen = receivers.filter((x) => x !== r).find((x) => partOf(hostPort(x)) !== partOf(hostPort(r)));
    if (seen) {
      recvA = seen;
      recvB = r;
      break;
    }
  }
  config = testConfig({ QUEUE_PARTITIONS: String(PARTITIONS) });
  ctx = await testContext(config);
  api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
});

afterAll(async () => {
  await stopWorkers();
  await api?.close();
  await ctx?.close();
  for (const r of receivers) await r.close();
  if (config) await removePrefixKeys(config);
});

describe('QUEUE_PARTITIONS=3, an action whose URL host changes', () => {
  it('the same idempotencyKey enqueued before and after the URL host changes is one job (delivery.md, Jobs)', async () => {
    expect(partOf(hostPort(recvA))).not.toBe(partOf(hostPort(recvB)));
    await ctx.store.put(action('idem_move', recvA.url));
    await limitKeyIs('idem_move', hostPort(recvA));
    const first = await ctx.producer.enqueue({ actionId: 'idem_move', params: { n: 1 }, idempotencyKey: 'journey-1:node-1:profile-1' });
    expect(first.deduplicated).toBe(false);

    // An operator moves the action to the third party's new host (same API, new address).
    await ctx.store.put(action('idem_move', recvB.url));
    await limitKeyIs('idem_move', hostPort(recvB));
    // The journey engine retries its enqueue of the same step (a timeout on its side).
    const again = await ctx.producer.enqueue({ actionId: 'idem_move', params: { n: 1 }, idempotencyKey: 'journey-1:node-1:profile-1' });

    await startWorker();
    await waitFor(async () => (await allResults()).filter((r) => r.actionId === 'idem_move').length >= 1, 15_000, 'a result');
    await new Promise((r) => setTimeout(r, 1500));
    const sent = recvB.requests.filter((r) => r.url.startsWith('/idem_move/')).length;
    await stopWorkers();

    expect
      .soft(again, 'second enqueue with the same idempotencyKey after the URL host changed')
      .toEqual({ jobId: first.jobId, deduplicated: true });
    expect.soft(sent, 'requests sent to the third party for one idempotencyKey').toBe(1);
  });

  it('an orderingKey line keeps its order when the URL host changes while jobs wait in it', async () => {
    // The first job of the line is held by the third party for a while: the ones behind it must wait.
    const order: number[] = [];
    recvB.handler = (r, res) => {
      if (!r.url.startsWith('/ord_move/')) return void res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      const n = Number(r.url.split('/')[2]);
      order.push(n);
      setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'), n === 1 ? 1500 : 0);
    };
    await ctx.store.put(action('ord_move', recvA.url));
    await limitKeyIs('ord_move', hostPort(recvA));
    const o1 = await ctx.producer.enqueue({ actionId: 'ord_move', params: { n: 1 }, orderingKey: 'profile-9' });
    const o2 = await ctx.producer.enqueue({ actionId: 'ord_move', params: { n: 2 }, orderingKey: 'profile-9' });
    // While o1 and o2 wait (no worker yet), the action moves to its new host.
    await ctx.store.put(action('ord_move', recvB.url));
    await limitKeyIs('ord_move', hostPort(recvB));
    const o3 = await ctx.producer.enqueue({ actionId: 'ord_move', params: { n: 3 }, orderingKey: 'profile-9' });
    const ids = [o1.jobId, o2.jobId, o3.jobId];

    await startWorker();
    await waitFor(
      async () => {
        const done = new Set((await allResults()).map((r) => r.jobId));
        return ids.every((id) => done.has(id));
      },
      20_000,
      'three ordered jobs',
    );
    await stopWorkers();
    expect(order, 'order in which the third party received the jobs of one orderingKey').toEqual([1, 2, 3]);
  });
});

describe('QUEUE_PARTITIONS=3, reads across partitions', () => {
  /** One rate-limit key per partition. */
  const keyOf: string[] = [];

  beforeAll(async () => {
    for (let i = 0; keyOf.filter(Boolean).length < PARTITIONS; i++) keyOf[partOf(`rk-${i}.example`)] ??= `rk-${i}.example`;
    recvA.handler = (r, res) => {
      if (r.url.startsWith('/gone_')) return void res.writeHead(404).end('gone');
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    };
    for (let p = 0; p < PARTITIONS; p++) {
      await ctx.store.put(action(`rd_${p}`, recvA.url, { rateLimit: { key: keyOf[p], max: 5000, perMs: 1000 } }));
    }
  });

  it('the results reader pages every partition with a small count: each entry once, the cursor never goes back', async () => {
    const reader = createResultsReader(ctx.redis, ctx.keys.partitions);
    const start = await reader.read({ after: 'now' });
    const jobs = Array.from({ length: 21 }, (_, n) => ({ actionId: `rd_${n % PARTITIONS}`, params: { n } }));
    const enq = await ctx.producer.enqueueMany(jobs);
    const ids = enq.map((e) => ('jobId' in e ? e.jobId : ''));
    const group = await reader.group('engine', 'c1', { startAt: 'start' });
    await startWorker();
    const seen: ResultEntry[] = [];
    let cursor = start.cursor;
    await waitFor(
      async () => {
        const r = await reader.read({ after: cursor, count: 2 });
        r.cursor.forEach((c, i) => expect(idNotBefore(c, cursor[i] as string), `cursor of partition ${i}`).toBe(true));
        cursor = r.cursor;
        seen.push(...r.entries.filter((e) => e.actionId.startsWith('rd_')));
        return ids.every((id) => seen.some((e) => e.jobId === id));
      },
      20_000,
      'every entry through the cursor',
    );
    // Nothing more, and nothing twice.
    const more = await reader.read({ after: cursor, count: 100 });
    expect(more.entries.filter((e) => ids.includes(e.jobId))).toEqual([]);
    expect(seen.map((e) => e.jobId).sort()).toEqual([...ids].sort());
    for (const e of seen) expect(e.partition).toBe(partOf(keyOf[Number(e.actionId.split('_')[1])] as string));

    // A consumer group over the same streams: each entry once, acknowledged once.
    const got: ResultEntry[] = [];
    for (let i = 0; i < 20; i++) {
      const b = await group.read({ count: 2 });
      got.push(...b.entries);
      if (b.entries.length > 0) await group.ack(b.entries);
      else if (got.length > 0) break;
    }
    const mine = got.filter((e) => ids.includes(e.jobId)).map((e) => e.jobId);
    expect(mine.sort()).toEqual([...ids].sort());
    expect((await group.read({ which: 'pending' })).entries).toEqual([]);
    await stopWorkers();
  });

  it('a dead letter replayed after its rate-limit key changed lands in the partition of the CURRENT key; job status follows both', async () => {
    const from = 0;
    const to = 2;
    await ctx.store.put(action('gone_move', recvA.url, { rateLimit: { key: keyOf[from], max: 5000, perMs: 1000 } }));
    await limitKeyIs('gone_move', keyOf[from] as string);
    await startWorker();
    const dead = await ctx.producer.enqueue({ actionId: 'gone_move', params: { n: 5 } });
    await waitFor(async () => (await ctx.deadLetters.get(dead.jobId)) !== null, 15_000, 'dead letter');
    expect(await ctx.redis.hexists(ctx.keys.partitions[from]?.dlqRecords as string, dead.jobId)).toBe(1);

    await ctx.store.put(action('gone_move', recvA.url, { rateLimit: { key: keyOf[to], max: 5000, perMs: 1000 } }));
    await limitKeyIs('gone_move', keyOf[to] as string);
    recvA.handler = (_r, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    const res = await api.inject({ method: 'POST', url: '/v1/dlq/replay', payload: { jobIds: [dead.jobId] } });
    expect(res.statusCode, res.body).toBe(200);
    const newId = (res.json() as { jobIds: string[] }).jobIds[0] as string;
    await waitFor(
      async () => (await resultsOf(to)).some((r) => r.jobId === newId && r.outcome === 'delivered'),
      15_000,
      'replay delivered',
    );
    const found = await ctx.queues.findJob(newId);
    expect(found?.partition.keys.index).toBe(to);
    const oldStatus = await api.inject({ method: 'GET', url: `/v1/jobs/${dead.jobId}` });
    expect(oldStatus.json()).toMatchObject({ state: 'dead', replayedAs: newId });
    const newStatus = await api.inject({ method: 'GET', url: `/v1/jobs/${newId}` });
    expect(newStatus.json()).toMatchObject({ state: 'delivered', actionId: 'gone_move' });
    await stopWorkers();
  });

  it('GET /v1/jobs/:id finds a job waiting in line in any partition', async () => {
    const ids: string[] = [];
    for (let p = 0; p < PARTITIONS; p++) {
      await ctx.producer.enqueue({ actionId: `rd_${p}`, params: { n: 1 }, orderingKey: 'line-x' });
      ids.push((await ctx.producer.enqueue({ actionId: `rd_${p}`, params: { n: 2 }, orderingKey: 'line-x' })).jobId);
    }
    for (const id of ids) {
      const r = await api.inject({ method: 'GET', url: `/v1/jobs/${id}` });
      expect(r.statusCode).toBe(200);
      expect(r.json()).toMatchObject({ state: 'waiting', attempts: 0 });
    }
  });
});
