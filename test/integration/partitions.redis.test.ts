import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createApiServer } from '../../src/api/api-server.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import type { Config } from '../../src/config/config.js';
import type { QueueStats } from '../../src/queue/stats.js';
import type { DlqSummary } from '../../src/queue/dead-letters.js';
import { removePrefixKeys, startReceiver, startTestWorker, testConfig, testContext, waitFor, type Receiver } from '../support/harness.js';

const PARTITIONS = 3;

let config: Config;
let ctx: RelayContext;
let worker: Awaited<ReturnType<typeof startTestWorker>>;
let receiver: Receiver;
let api: FastifyInstance;
/** Rate-limit key of partition i. */
const keyOf: string[] = [];
/** Paths answered 404 (dead at once); /flaky answers 500 to its first request per job, then 200. */
const gone = new Set<string>();
const flakySeen = new Set<string>();

function action(id: string, limitKey: string, extra: Record<string, unknown> = {}) {
  return {
    id,
    name: id,
    endpoint: { url: receiver.url, path: `/${id}/{{job.id}}`, method: 'POST' },
    parameters: { n: { type: 'integer', required: true } },
    body: { n: '{{params.n}}' },
    retry: { maxAttempts: 3, backoff: { type: 'fixed', delayMs: 20, maxDelayMs: 20 } },
    rateLimit: { key: limitKey, max: 5000, perMs: 1000 },
    ...extra,
  };
}

/** Every entry of one partition's results stream. */
async function resultsOf(partition: number): Promise<Record<string, string>[]> {
  const key = ctx.keys.partitions[partition]?.results as string;
  const entries = (await ctx.redis.xrange(key, '-', '+')) as [string, string[]][];
  return entries.map(([, f]) => Object.fromEntries(Array.from({ length: f.length / 2 }, (_, i) => [f[2 * i], f[2 * i + 1]])));
}

async function allResults(): Promise<Map<string, { partition: number; fields: Record<string, string> }[]>> {
  const byJob = new Map<string, { partition: number; fields: Record<string, string> }[]>();
  for (let p = 0; p < PARTITIONS; p++) {
    for (const fields of await resultsOf(p))
      byJob.set(fields.jobId as string, [...(byJob.get(fields.jobId as string) ?? []), { partition: p, fields }]);
  }
  return byJob;
}

async function get<T>(url: string): Promise<T> {
  const res = await api.inject({ method: 'GET', url });
  expect(res.statusCode, `${url}: ${res.body}`).toBe(200);
  return res.json() as T;
}

async function post<T>(url: string, payload: unknown): Promise<T> {
  const res = await api.inject({ method: 'POST', url, payload: payload as Record<string, unknown> });
  expect(res.statusCode, `${url}: ${res.body}`).toBeLessThan(300);
  return res.json() as T;
}

beforeAll(async () => {
  receiver = await startReceiver();
  receiver.handler = (r, res) => {
    const [, actionId = '', jobId = ''] = r.url.split('/');
    if (gone.has(actionId)) return void res.writeHead(404).end('gone');
    if (actionId.startsWith('flaky') && !flakySeen.has(jobId)) {
      flakySeen.add(jobId);
      return void res.writeHead(500).end('try again');
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  };
  config = testConfig({ QUEUE_PARTITIONS: String(PARTITIONS) });
  ctx = await testContext(config);
  worker = await startTestWorker(config);
  api = await createApiServer({ ctx, sender: createHttpSender() });
  // One rate-limit key per partition, found by the routing itself.
  for (let i = 0; keyOf.filter(Boolean).length < PARTITIONS; i++) {
    const key = `api-${i}.example`;
    const p = ctx.keys.partitionFor(key).index;
    keyOf[p] ??= key;
  }
  for (let p = 0; p < PARTITIONS; p++) {
    await ctx.store.put(action(`ok_${p}`, keyOf[p] as string));
    await ctx.store.put(action(`flaky_${p}`, keyOf[p] as string));
    await ctx.store.put(action(`dead_${p}`, keyOf[p] as string));
  }
  for (let p = 0; p < PARTITIONS; p++) gone.add(`dead_${p}`);
});

afterAll(async () => {
  await worker.stop();
  await api.close();
  await ctx.close();
  await receiver.close();
  await removePrefixKeys(config);
});

describe(`QUEUE_PARTITIONS=${PARTITIONS} on one Redis`, () => {
  it('routes each rate-limit key to one partition, writes its results there, and the API finds every job', async () => {
    const jobs = Array.from({ length: 4 * PARTITIONS }, (_, n) => ({ actionId: `ok_${n % PARTITIONS}`, params: { n } }));
    const { results } = await post<{ results: { jobId: string }[] }>('/v1/jobs/batch', { jobs });
    const single = await post<{ jobId: string }>('/v1/jobs', { actionId: 'ok_1', params: { n: 99 } });
    const ids = [...results.map((r) => r.jobId), single.jobId];
    const partitionOfJob = (i: number) => (i < jobs.length ? i % PARTITIONS : 1);

    const byJob = await waitFor(
      async () => {
        const all = await allResults();
        return ids.every((id) => all.has(id)) && all;
      },
      15_000,
      'every result',
    );
    ids.forEach((id, i) => {
      // Exactly one result, on the stream of the partition of its action's rate-limit key.
      expect(byJob.get(id)?.map((r) => r.partition)).toEqual([partitionOfJob(i)]);
      expect(byJob.get(id)?.[0]?.fields.outcome).toBe('delivered');
    });
    for (const [i, id] of ids.entries()) {
      const status = await get<{ state: string; actionId: string }>(`/v1/jobs/${id}`);
      expect(status).toMatchObject({ state: 'delivered', actionId: i < jobs.length ? `ok_${i % PARTITIONS}` : 'ok_1' });
      // The job itself lives in that partition's queue and in no other.
      const holders = await Promise.all(ctx.queues.partitions.map((p) => p.queue.getJob(id)));
      expect(holders.map((j) => Boolean(j))).toEqual(ctx.queues.partitions.map((p) => p.keys.index === partitionOfJob(i)));
    }

    const stats = await get<QueueStats>('/v1/stats');
    expect(stats.partitions.map((p) => p.results)).toEqual(ctx.keys.partitions.map((p) => p.results));
    expect(stats.partitions.map((p) => p.resultsLength)).toEqual([4, 5, 4]);
    expect(stats.results).toBe(13);
    expect(stats.queue).toMatchObject({ delivered: 13, dead: 0 });
  });

  it('retries in the job partition and dead-letters there, with every attempt; the DLQ API merges partitions newest first', async () => {
    const flaky = await Promise.all([0, 1, 2].map((p) => ctx.producer.enqueue({ actionId: `flaky_${p}`, params: { n: p } })));
    const deadIds: string[] = [];
    for (let n = 0; n < 7; n++) {
      deadIds.push((await ctx.producer.enqueue({ actionId: `dead_${n % PARTITIONS}`, params: { n } })).jobId);
      // Distinct failure times, so that the newest-first order is known.
      await waitFor(async () => (await ctx.deadLetters.get(deadIds[n] as string)) !== null, 10_000, `dead letter ${n}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    await waitFor(
      async () => {
        const all = await allResults();
        return flaky.every((f) => all.get(f.jobId)?.[0]?.fields.outcome === 'delivered');
      },
      10_000,
      'flaky jobs delivered on their second attempt',
    );
    const all = await allResults();
    flaky.forEach((f, p) => expect(all.get(f.jobId)).toMatchObject([{ partition: p, fields: { attempts: '2' } }]));

    // Each dead letter is stored in its own partition only.
    for (const [n, id] of deadIds.entries()) {
      const holders = await Promise.all(ctx.keys.partitions.map((p) => ctx.redis.hexists(p.dlqRecords, id)));
      expect(holders).toEqual(ctx.keys.partitions.map((p) => (p.index === n % PARTITIONS ? 1 : 0)));
      expect(await get<{ state: string }>(`/v1/jobs/${id}`)).toMatchObject({ state: 'dead' });
      expect(await get<{ reason: string; status: number }>(`/v1/dlq/${id}`)).toMatchObject({ reason: 'http_status', status: 404 });
    }

    // Pages of 2 across the three partitions: each dead letter once, newest first.
    const seen: DlqSummary[] = [];
    let cursor: string | null = null;
    do {
      const page: { items: DlqSummary[]; nextCursor: string | null } = await get(`/v1/dlq?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      seen.push(...page.items);
      cursor = page.nextCursor;
    } while (cursor);
    expect(seen.map((s) => s.jobId)).toEqual([...deadIds].reverse());
    expect((await get<{ items: DlqSummary[] }>('/v1/dlq?actionId=dead_2')).items.map((s) => s.jobId)).toEqual([deadIds[5], deadIds[2]]);

    const stats = await get<QueueStats>('/v1/stats');
    expect(stats.dlq).toBe(7);
    expect(stats.partitions.map((p) => p.dlq)).toEqual([3, 2, 2]);
    const metrics = (await api.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).toMatch(/action_relay_queue_jobs\{state="dlq"\} 7/);
  });

  it('replays dead letters into the partition of their key, purges by filter, and trims the oldest overall', async () => {
    const dead = (await ctx.deadLetters.list({}, 100)).items;
    expect(dead).toHaveLength(7);
    gone.delete('dead_0');
    gone.delete('dead_1');
    const dry = await post<{ matched: number }>('/v1/dlq/replay', { filter: { actionId: 'dead_0' }, dryRun: true });
    expect(dry.matched).toBe(3);
    const replay = await post<{ replayed: number; jobIds: string[] }>('/v1/dlq/replay', {
      jobIds: dead.filter((d) => d.actionId !== 'dead_2').map((d) => d.jobId),
    });
    expect(replay.replayed).toBe(5);
    await waitFor(
      async () => {
        const all = await allResults();
        return replay.jobIds.every((id) => all.get(id)?.[0]?.fields.outcome === 'delivered');
      },
      10_000,
      'replays delivered',
    );
    const all = await allResults();
    for (const id of replay.jobIds) {
      const job = await ctx.queues.findJob(id);
      const p = ctx.keys.partitionFor(keyOf[Number((job?.job.name ?? '').split('_')[1])] as string).index;
      expect(job?.partition.keys.index).toBe(p);
      expect(all.get(id)?.[0]?.partition).toBe(p);
    }
    expect((await ctx.deadLetters.list({}, 100)).items.map((d) => d.actionId)).toEqual(['dead_2', 'dead_2']);

    // Five more dead letters over the partitions, then keep only the newest four of all seven.
    gone.add('dead_0');
    gone.add('dead_1');
    const more: string[] = [];
    for (let n = 0; n < 5; n++) {
      more.push((await ctx.producer.enqueue({ actionId: `dead_${n % PARTITIONS}`, params: { n } })).jobId);
      await waitFor(async () => (await ctx.deadLetters.get(more[n] as string)) !== null, 10_000, `dead letter ${n}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(await ctx.deadLetters.trim(86_400_000, 4)).toBe(3);
    expect((await ctx.deadLetters.list({}, 100)).items.map((d) => d.jobId)).toEqual([...more].reverse().slice(0, 4));

    const purged = await post<{ purged: number }>('/v1/dlq/purge', { filter: { actionId: 'dead_1' } });
    expect(purged.purged).toBe(2);
    expect((await get<QueueStats>('/v1/stats')).dlq).toBe(2);
  });
});
