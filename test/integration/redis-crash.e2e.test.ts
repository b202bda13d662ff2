import { describe, expect, it } from 'vitest';
import { removePrefixKeys, spawnWorker, startReceiver, testConfig, testContext, trackRuns, waitFor } from '../support/harness.js';
import { AOF_ALWAYS, endedJobs, entriesPerJob, startOwnedRedis } from '../support/recovery.js';

const { children, cleanups } = trackRuns();

const ROUNDS = 5;
const JOBS_PER_ROUND = 300;
const CONCURRENCY = 32;
const WORKERS = 2;

/** A whole number in [min, max]. */
const between = (min: number, max: number) => min + Math.floor(Math.random() * (max - min + 1));

describe('Redis SIGKILLed during delivery (AOF, appendfsync always)', () => {
  it(`ends every job once, soon after Redis is back, over ${ROUNDS} crashes at random moments`, async () => {
    const redis = await startOwnedRedis(AOF_ALWAYS);
    const receiver = await startReceiver();
    receiver.handler = (_r, res) => setTimeout(() => res.writeHead(200).end('{}'), 20);
    // The shipped lock settings: only the test's own Redis and prefix are set.
    const config = testConfig({ REDIS_URL: redis.url });
    const ctx = await testContext(config);
    cleanups.push(async () => {
      await ctx.close();
      await receiver.close();
      await redis.remove();
    });
    await ctx.store.put({ id: 'crash', name: 'crash', endpoint: { url: receiver.url, path: '/c', method: 'POST' }, body: { a: 1 } });
    for (let w = 0; w < WORKERS; w++) spawnWorker(config, children, { WORKER_CONCURRENCY: String(CONCURRENCY) });
    // Workers delivering before the first round (process start-up is slow on a busy machine).
    await ctx.producer.enqueue({ actionId: 'crash', params: {}, idempotencyKey: 'warm-up' });
    await waitFor(() => receiver.requests.length >= 1, 90_000, 'a worker to deliver');

    const allIds: string[] = [];
    const rounds: { killedAfter: number; downMs: number; endedAfterS: number }[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const jobs = Array.from({ length: JOBS_PER_ROUND }, (_, i) => ({ actionId: 'crash', params: {}, idempotencyKey: `r${round}-${i}` }));
      const ids = (await ctx.producer.enqueueMany(jobs)).map((r) => ('jobId' in r ? r.jobId : ''));
      allIds.push(...ids);
      // A random moment of the round's delivery: after 5 to 95 % of its jobs reached the receiver.
      const killAfter = between(JOBS_PER_ROUND * 0.05, JOBS_PER_ROUND * 0.95);
      const before = receiver.requests.length;
      await waitFor(() => receiver.requests.length - before >= killAfter, 30_000, `${killAfter} requests of round ${round}`);
      await redis.kill('SIGKILL');
      const downMs = between(200, 1500);
      await new Promise((r) => setTimeout(r, downMs));
      await redis.restart();
      const backAt = Date.now();
      const ended = await waitFor(
        async () => {
          const entries = await endedJobs(ctx).catch(() => []);
          const mine = new Set(ids);
          const found = entries.filter((e) => mine.has(e.jobId));
          return new Set(found.map((e) => e.jobId)).size >= ids.length ? found : undefined;
        },
        30_000,
        `every job of round ${round} to end within 30 s of Redis coming back`,
      );
      const last = Math.max(...ended.map((e) => e.at));
      rounds.push({ killedAfter: killAfter, downMs, endedAfterS: Math.max(0, last - backAt) / 1000 });
    }

    const entries = await endedJobs(ctx);
    const perJob = entriesPerJob(entries);
    expect(allIds.filter((id) => perJob.get(id) !== 1)).toEqual([]);
    expect(entries.filter((e) => e.outcome !== 'delivered')).toEqual([]);
    const sent = new Map<string, number>();
    for (const r of receiver.requests) {
      const key = String(r.headers['idempotency-key']);
      sent.set(key, (sent.get(key) ?? 0) + 1);
    }
    expect(sent.size).toBe(ROUNDS * JOBS_PER_ROUND + 1);
    const duplicates = [...sent.values()].reduce((sum, n) => sum + n - 1, 0);
    // At most what the workers had in flight at each crash is sent again.
    expect(duplicates).toBeLessThanOrEqual(ROUNDS * WORKERS * CONCURRENCY);
    console.log(
      `redis crash: ${ROUNDS} SIGKILLs of an AOF-always redis-server, ${JOBS_PER_ROUND} jobs a round, ${WORKERS} workers x ${CONCURRENCY}; ` +
        `every job one results entry, all delivered; ${duplicates} duplicate deliveries; per round (killed after n requests, down ms, last job ended s after Redis was back): ` +
        rounds.map((r) => `${r.killedAfter}/${r.downMs}/${r.endedAfterS.toFixed(1)}`).join(', '),
    );
    await removePrefixKeys(config);
  }, 180_000);
});
