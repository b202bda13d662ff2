import type { ServerResponse } from 'node:http';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { createApiServer } from '../../src/api/api-server.js';
import { runWorker } from '../../src/cli/run-worker.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import { createLogger } from '../../src/logger.js';
import { checkEvictionPolicy } from '../../src/redis/eviction-policy.js';
import { spawnWorker, startReceiver, testConfig, testContext, trackRuns, waitFor } from '../support/harness.js';
import { endedJobs, entriesPerJob, startOwnedRedis } from '../support/recovery.js';

const { children, cleanups } = trackRuns();

const NO_PERSISTENCE = ['--save', '', '--appendonly', 'no'];
const JOBS = 100;

describe('a full Redis (maxmemory, noeviction)', () => {
  it('answers enqueues 503 redis_unavailable, keeps workers running, and loses nothing it acknowledged', async () => {
    const redis = await startOwnedRedis([...NO_PERSISTENCE, '--maxmemory', '64mb', '--maxmemory-policy', 'noeviction']);
    const admin = new Redis(redis.url);
    const receiver = await startReceiver();
    // Requests are held until the test lets them go, so jobs are in flight when Redis fills up.
    const held: ServerResponse[] = [];
    let holding = true;
    receiver.handler = (_r, res) => (holding ? held.push(res) : res.writeHead(200).end('{}'));
    const config = testConfig({ REDIS_URL: redis.url });
    const ctx = await testContext(config);
    const sender = createHttpSender({ guard: ctx.egress });
    const api = await createApiServer({ ctx, sender });
    cleanups.push(async () => {
      await api.close();
      await sender.close();
      await ctx.close();
      admin.disconnect();
      await receiver.close();
      await redis.remove();
    });
    await ctx.store.put({ id: 'full', name: 'full', endpoint: { url: receiver.url, path: '/f', method: 'POST' }, body: { a: 1 } });
    const worker = spawnWorker(config, children, { WORKER_CONCURRENCY: '16' });

    const batch = await api.inject({
      method: 'POST',
      url: '/v1/jobs/batch',
      payload: { jobs: Array.from({ length: JOBS }, (_, i) => ({ actionId: 'full', params: {}, idempotencyKey: `f-${i}` })) },
    });
    expect(batch.statusCode).toBe(202);
    const ids = (batch.json() as { results: { jobId: string }[] }).results.map((r) => r.jobId);
    await waitFor(() => held.length >= 16, 30_000, 'the worker to have 16 requests in flight');

    // Ballast under the test's prefix, then maxmemory just below what Redis holds: full, as it
    // would be after a backlog grew. (Filling to the limit with big values alone does not do:
    // the refused value's own query buffer is what tips it over.)
    const ballast = 'x'.repeat(512 * 1024);
    for (let n = 0; n < 16; n++) await admin.set(`{${config.ACTION_RELAY_PREFIX}}:ballast:${n}`, ballast);
    const used = Number(/used_memory:(\d+)/.exec(await admin.info('memory'))?.[1]);
    await admin.config('SET', 'maxmemory', String(used - 1024 * 1024));
    await expect(admin.set(`{${config.ACTION_RELAY_PREFIX}}:probe`, '1')).rejects.toThrow(/OOM/);
    const refused = await api.inject({
      method: 'POST',
      url: '/v1/jobs',
      payload: { actionId: 'full', params: {}, idempotencyKey: 'late' },
    });
    expect(refused.statusCode).toBe(503);
    expect(refused.json()).toMatchObject({ error: { code: 'redis_unavailable', message: expect.stringMatching(/out of memory/) } });
    const refusedBatch = await api.inject({ method: 'POST', url: '/v1/jobs/batch', payload: { jobs: [{ actionId: 'full', params: {} }] } });
    expect(refusedBatch.statusCode).toBe(503);

    // The requests in flight are answered while Redis cannot take their outcomes.
    holding = false;
    for (const res of held.splice(0)) res.writeHead(200).end('{}');
    await waitFor(() => receiver.requests.length >= 32, 30_000, 'the worker to go on sending');
    expect(worker.exitCode).toBeNull();

    // Memory frees: every acknowledged job ends, once.
    const keys = await admin.keys(`{${config.ACTION_RELAY_PREFIX}}:ballast:*`);
    await Promise.all(keys.map((k) => admin.del(k)));
    const freedAt = Date.now();
    const entries = await waitFor(
      async () => {
        const all = await endedJobs(ctx);
        return new Set(all.map((e) => e.jobId)).size >= JOBS ? all : undefined;
      },
      45_000,
      'every acknowledged job to end',
    );
    const perJob = entriesPerJob(entries);
    expect(ids.filter((id) => perJob.get(id) !== 1)).toEqual([]);
    expect(entries.every((e) => e.outcome === 'delivered')).toBe(true);
    expect(worker.exitCode).toBeNull();
    const again = await api.inject({ method: 'POST', url: '/v1/jobs', payload: { actionId: 'full', params: {}, idempotencyKey: 'after' } });
    expect(again.statusCode).toBe(202);
    const sent = new Set(receiver.requests.map((r) => String(r.headers['idempotency-key'])));
    console.log(
      `redis full: ${JOBS} jobs acknowledged, then Redis full (OOM); enqueue answered 503 and the worker kept running; ` +
        `after 8 MiB were freed every job ended once, the last ${((Math.max(...entries.map((e) => e.at)) - freedAt) / 1000).toFixed(1)} s later; ` +
        `${receiver.requests.length - sent.size} duplicate deliveries`,
    );
  }, 90_000);

  it('refuses to start a worker unless maxmemory-policy is noeviction, and only warns when CONFIG is refused', async () => {
    const lru = await startOwnedRedis([...NO_PERSISTENCE, '--maxmemory-policy', 'allkeys-lru']);
    const locked = await startOwnedRedis([...NO_PERSISTENCE, '--rename-command', 'CONFIG', '']);
    cleanups.push(() => lru.remove());
    cleanups.push(() => locked.remove());

    // The listener opens before Redis answers; the check runs once it does, and the worker must stop.
    const worker = await runWorker(testConfig({ REDIS_URL: lru.url }));
    await expect(worker.setupChecked).rejects.toThrow(/maxmemory-policy allkeys-lru: it must be noeviction/);
    await worker.stop();

    const lines: string[] = [];
    const logger = createLogger('warn', { write: (l: string) => void lines.push(l) });
    const client = new Redis(locked.url);
    await checkEvictionPolicy(client, logger);
    client.disconnect();
    expect(lines.join('\n')).toMatch(/could not read maxmemory-policy/);
  });
});
