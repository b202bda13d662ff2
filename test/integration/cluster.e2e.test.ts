import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createApiServer } from '../../src/api/api-server.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import { hashTaggedPrefix, type Config } from '../../src/config/config.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import type { QueueStats } from '../../src/queue/stats.js';
import { relayKeys } from '../../src/redis/redis-connection.js';
import {
  WORKER_START_MS,
  kill,
  removePrefixKeys,
  spawnWorker,
  startReceiver,
  testConfig,
  testContext,
  waitFor,
  type Receiver,
} from '../support/harness.js';
import { startLocalCluster, type LocalCluster } from '../support/local-cluster.js';

const PARTITIONS = 3;

let cluster: LocalCluster;
let config: Config;
let ctx: RelayContext;
let receiver: Receiver;
let api: FastifyInstance;
const children: ChildProcess[] = [];
/** Rate-limit key of partition i. */
const keyOf: string[] = [];
/** Actions whose path answers 404 (dead at once). */
const gone = new Set<string>();
/** Jobs of flaky_* already answered 429 once (then 200). */
const flakySeen = new Set<string>();

/** Every feature that keeps state in Redis is on, so each Lua script runs on the cluster. */
function action(id: string, limitKey: string) {
  return {
    id,
    name: id,
    endpoint: { url: receiver.url, path: `/${id}/{{job.id}}`, method: 'POST' },
    parameters: { n: { type: 'integer', required: true } },
    body: { n: '{{params.n}}' },
    retry: { maxAttempts: 3, backoff: { type: 'fixed', delayMs: 50, maxDelayMs: 50 } },
    rateLimit: { key: limitKey, max: 2000, perMs: 1000, maxConcurrent: 8 },
    circuitBreaker: { failureRatio: 0.99, minRequests: 1000, windowMs: 10_000, openMs: 1000 },
  };
}

async function resultsByJob(): Promise<Map<string, { partition: number; fields: Record<string, string> }[]>> {
  const byJob = new Map<string, { partition: number; fields: Record<string, string> }[]>();
  for (const p of ctx.keys.partitions) {
    // One XRANGE per stream: the streams live in different slots (and here, on different masters).
    const entries = (await ctx.redis.xrange(p.results, '-', '+')) as [string, string[]][];
    for (const [, f] of entries) {
      const fields = Object.fromEntries(Array.from({ length: f.length / 2 }, (_, i) => [f[2 * i], f[2 * i + 1]])) as Record<string, string>;
      byJob.set(fields.jobId as string, [...(byJob.get(fields.jobId as string) ?? []), { partition: p.index, fields }]);
    }
  }
  return byJob;
}

async function call<T>(method: 'GET' | 'POST', url: string, payload?: unknown): Promise<T> {
  const res = await api.inject({ method, url, ...(payload ? { payload: payload as Record<string, unknown> } : {}) });
  expect(res.statusCode, `${method} ${url}: ${res.body}`).toBeLessThan(300);
  return res.json() as T;
}

const slotMasters = (prefix: string) =>
  Promise.all(
    relayKeys(hashTaggedPrefix(prefix), PARTITIONS).partitions.map(async (p) => cluster.masterOf(await cluster.keySlot(p.bullPrefix))),
  );

describe(`a 3-master Redis Cluster with QUEUE_PARTITIONS=${PARTITIONS} and two worker processes`, () => {
  beforeAll(async () => {
    cluster = await startLocalCluster(3);
    receiver = await startReceiver();
    receiver.handler = (r, res) => {
      const [, actionId = '', jobId = ''] = r.url.split('/');
      if (gone.has(actionId)) return void res.writeHead(404).end('gone');
      if (actionId.startsWith('flaky') && !flakySeen.has(jobId)) {
        flakySeen.add(jobId);
        // Retry-After 0: the back-pressure script runs too, without slowing the test.
        return void res.writeHead(429, { 'retry-after': '0' }).end('slow down');
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    };
    // A prefix whose three partitions hash to slots of three different masters (2 prefixes in 9
    // do), so that the test shows the queues spread; routing itself never depends on it.
    for (;;) {
      config = testConfig({ REDIS_CLUSTER_NODES: cluster.nodes.join(','), QUEUE_PARTITIONS: String(PARTITIONS) });
      if (new Set(await slotMasters(config.ACTION_RELAY_PREFIX)).size === 3) break;
    }
    ctx = await testContext(config);
    api = await createApiServer({ ctx, sender: createHttpSender() });
    for (let i = 0; keyOf.filter(Boolean).length < PARTITIONS; i++)
      keyOf[ctx.keys.partitionFor(`api-${i}.example`).index] ??= `api-${i}.example`;
    for (const [p, key] of keyOf.entries()) {
      for (const kind of ['ok', 'flaky', 'dead']) await ctx.store.put(action(`${kind}_${p}`, key));
      gone.add(`dead_${p}`);
    }
    const env = {
      REDIS_CLUSTER_NODES: cluster.nodes.join(','),
      QUEUE_PARTITIONS: String(PARTITIONS),
      WORKER_CONCURRENCY: '16',
      EGRESS_ALLOW_HOSTS: '127.0.0.1,localhost',
    };
    spawnWorker(config, children, env);
    spawnWorker(config, children, env);
  }, 60_000);

  afterAll(async () => {
    await Promise.all(children.map((c) => kill(c, 'SIGTERM')));
    await api?.close();
    await ctx?.close();
    await receiver?.close();
    if (config) await removePrefixKeys(config);
    await cluster?.stop();
  });

  it('delivers, retries (429 then 200) and dead-letters (404), each job in the partition of its rate-limit key', async () => {
    const jobs = keyOf.flatMap((_, p) => [
      ...[1, 2, 3].map((n) => ({ actionId: `ok_${p}`, params: { n } })),
      { actionId: `flaky_${p}`, params: { n: 4 } },
      { actionId: `dead_${p}`, params: { n: 5 } },
    ]);
    const { results } = await call<{ results: { jobId: string }[] }>('POST', '/v1/jobs/batch', { jobs });
    const ids = results.map((r) => r.jobId);
    const byJob = await waitFor(
      async () => {
        const all = await resultsByJob();
        return ids.every((id) => all.has(id)) && all;
      },
      WORKER_START_MS,
      'a result for every job',
    );
    jobs.forEach((job, i) => {
      const [kind, p] = job.actionId.split('_') as [string, string];
      const expected =
        kind === 'ok'
          ? { outcome: 'delivered', attempts: '1', status: '200' }
          : kind === 'flaky'
            ? { outcome: 'delivered', attempts: '2', status: '200' }
            : { outcome: 'dead', attempts: '1', status: '404', reason: 'http_status' };
      expect(byJob.get(ids[i] as string)).toMatchObject([{ partition: Number(p), fields: expected }]);
    });

    for (const [i, id] of ids.entries()) {
      const dead = jobs[i]?.actionId.startsWith('dead');
      expect(await call<{ state: string }>('GET', `/v1/jobs/${id}`)).toMatchObject({ state: dead ? 'dead' : 'delivered' });
    }
    const dlq = await call<{ items: { actionId: string }[] }>('GET', '/v1/dlq');
    expect(dlq.items.map((d) => d.actionId).sort()).toEqual(['dead_0', 'dead_1', 'dead_2']);
    const stats = await call<QueueStats>('GET', '/v1/stats');
    expect(stats.partitions.map((p) => [p.dlq, p.resultsLength])).toEqual([
      [1, 5],
      [1, 5],
      [1, 5],
    ]);
  }, 90_000);

  it('replays the dead letters through the cluster', async () => {
    gone.clear();
    const replay = await call<{ replayed: number; jobIds: string[] }>('POST', '/v1/dlq/replay', { all: true });
    expect(replay.replayed).toBe(3);
    const byJob = await waitFor(
      async () => {
        const all = await resultsByJob();
        return replay.jobIds.every((id) => all.get(id)?.[0]?.fields.outcome === 'delivered') && all;
      },
      15_000,
      'replays delivered',
    );
    for (const id of replay.jobIds) {
      const found = await ctx.queues.findJob(id);
      const p = Number(found?.job.name.split('_')[1]);
      expect(byJob.get(id)?.map((r) => r.partition)).toEqual([p]);
    }
    expect((await call<QueueStats>('GET', '/v1/stats')).dlq).toBe(0);
    expect((await api.inject({ method: 'GET', url: '/metrics' })).body).toMatch(/action_relay_queue_jobs\{state="dlq"\} 0/);
  });

  it('keeps each partition on the master serving its hash slot: the three queues are on three masters', async () => {
    const holders = await Promise.all(
      ctx.keys.partitions.map(async (p) => {
        const slot = await cluster.keySlot(p.bullPrefix);
        for (const key of [p.results, `${p.bullPrefix}:${p.queueName}:completed`]) expect(await cluster.keySlot(key)).toBe(slot);
        const master = await cluster.masterOf(slot);
        // Asked directly (no cluster routing): the keys are really there.
        const [results, completed, inSlot] = await cluster.onNode(
          (r) => Promise.all([r.xlen(p.results), r.zcard(`${p.bullPrefix}:${p.queueName}:completed`), r.cluster('COUNTKEYSINSLOT', slot)]),
          master,
        );
        expect(results).toBe(6);
        expect(completed).toBe(6);
        expect(Number(inSlot)).toBeGreaterThan(2);
        return master;
      }),
    );
    expect(new Set(holders).size).toBe(3);
  });
});
