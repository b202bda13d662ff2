import { describe, expect, it } from 'vitest';
import { getJobStatus } from '../../src/queue/job-status.js';
import { WORKER_START_MS, kill, setupRun, spawnWorker, startTestWorker, testConfig, trackRuns, waitFor } from '../support/harness.js';

/*
 * The retention settings do what the docs say: the results stream is trimmed to about
 * RESULTS_MAXLEN, finished jobs are forgotten after JOB_RETENTION_SECONDS, an idempotency key
 * deduplicates for IDEMPOTENCY_TTL_SECONDS only, a worker trims dead letters beyond DLQ_MAX_COUNT
 * by itself, and REQUEST_TIMEOUT_CAP_MS clamps an action's longer timeoutMs.
 */

const { children, cleanups } = trackRuns();

async function setup(overrides: Record<string, string>) {
  const { receiver, config, ctx } = await setupRun(cleanups, overrides);
  await ctx.store.put({
    id: 'kept',
    name: 'kept',
    endpoint: { url: receiver.url, path: '/k', method: 'POST' },
    body: { n: '{{params.n}}' },
    parameters: { n: { type: 'integer' } },
    retry: { maxAttempts: 1 },
  });
  return { receiver, config, ctx };
}

async function startWorker(config: ReturnType<typeof testConfig>) {
  const worker = await startTestWorker(config);
  cleanups.push(() => worker.stop());
  return worker;
}

describe('retention', () => {
  it('trims the results stream to about RESULTS_MAXLEN entries', async () => {
    const { config, ctx } = await setup({ RESULTS_MAXLEN: '1000' });
    const total = 1300;
    for (let i = 0; i < total; i += 500) {
      await ctx.producer.enqueueMany(
        Array.from({ length: Math.min(500, total - i) }, (_, k) => ({ actionId: 'kept', params: { n: i + k } })),
      );
    }
    await startWorker(config);
    await waitFor(async () => (await ctx.queue.getJobCounts('completed')).completed === total, 60_000, 'every job delivered');
    const length = await ctx.redis.xlen(ctx.keys.results);
    // Trimming is approximate (whole stream nodes of 100 entries), never below the limit.
    expect(length).toBeGreaterThanOrEqual(1000);
    expect(length).toBeLessThanOrEqual(1100);
  }, 90_000);

  it('forgets a finished job after JOB_RETENTION_SECONDS', async () => {
    const { config, ctx } = await setup({ JOB_RETENTION_SECONDS: '1' });
    await startWorker(config);
    const { jobId } = await ctx.producer.enqueue({ actionId: 'kept', params: { n: 1 } });
    await waitFor(async () => (await getJobStatus(ctx.queues, ctx.redis, jobId))?.state === 'delivered', 10_000, 'the first job delivered');
    // BullMQ removes aged jobs when later ones complete: keep jobs coming until the first is gone.
    const gone = await waitFor(
      async () => {
        await ctx.producer.enqueue({ actionId: 'kept', params: { n: 2 } });
        await new Promise((r) => setTimeout(r, 200));
        return (await getJobStatus(ctx.queues, ctx.redis, jobId)) === null;
      },
      10_000,
      'the first job forgotten',
    );
    expect(gone).toBe(true);
  });

  it('deduplicates an idempotency key for IDEMPOTENCY_TTL_SECONDS, then takes it as a new job', async () => {
    const { ctx } = await setup({ IDEMPOTENCY_TTL_SECONDS: '1' });
    // The TTL runs from the first enqueue: a slow second round trip must not eat into the bound below.
    const startedAt = Date.now();
    const first = await ctx.producer.enqueue({ actionId: 'kept', params: { n: 1 }, idempotencyKey: 'order-1' });
    expect(first.deduplicated).toBe(false);
    const again = await ctx.producer.enqueue({ actionId: 'kept', params: { n: 1 }, idempotencyKey: 'order-1' });
    expect(again).toEqual({ jobId: first.jobId, deduplicated: true });
    const fresh = await waitFor(
      async () => {
        const r = await ctx.producer.enqueue({ actionId: 'kept', params: { n: 1 }, idempotencyKey: 'order-1' });
        return r.deduplicated ? undefined : r;
      },
      10_000,
      'the key to expire',
    );
    expect(fresh.jobId).not.toBe(first.jobId);
    // Not before the TTL (a little slack for Redis' expiry resolution).
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(800);
  });

  it('a worker process trims dead letters beyond DLQ_MAX_COUNT on its own, oldest first', async () => {
    const { receiver, config, ctx } = await setup({});
    receiver.handler = (_r, res) => res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":"bad"}');
    const first = await startWorker(config);
    const ids = (await ctx.producer.enqueueMany(Array.from({ length: 8 }, (_, n) => ({ actionId: 'kept', params: { n } })))).map((r) =>
      'jobId' in r ? r.jobId : '',
    );
    await waitFor(async () => (await ctx.redis.zcard(ctx.keys.dlq)) === ids.length, 30_000, 'eight dead letters');
    // Oldest first, as the DLQ index orders them by the time each job died.
    const byAge = await ctx.redis.zrange(ctx.keys.dlq, 0, -1);
    await first.stop();
    const worker = spawnWorker(config, children, { DLQ_MAX_COUNT: '3' });
    await waitFor(async () => (await ctx.redis.zcard(ctx.keys.dlq)) === 3, WORKER_START_MS, 'the DLQ trimmed to 3');
    const kept = await ctx.redis.zrange(ctx.keys.dlq, 0, -1);
    expect(kept).toEqual(byAge.slice(5));
    await kill(worker, 'SIGTERM');
  }, 90_000);

  it('REQUEST_TIMEOUT_CAP_MS clamps an action whose timeoutMs is longer', async () => {
    const { receiver, config, ctx } = await setup({ REQUEST_TIMEOUT_CAP_MS: '300' });
    receiver.handler = () => undefined; // never answers
    await ctx.store.put({
      id: 'slow',
      name: 'slow',
      endpoint: { url: receiver.url, path: '/slow', method: 'POST', timeoutMs: 60_000 },
      body: {},
      retry: { maxAttempts: 1 },
    });
    const worker = spawnWorker(config, children, { REQUEST_TIMEOUT_CAP_MS: '300' });
    const { jobId } = await ctx.producer.enqueue({ actionId: 'slow', params: {} });
    const record = await waitFor(() => ctx.deadLetters.get(jobId), WORKER_START_MS, 'the job dead');
    expect(record.reason).toBe('timeout');
    // Far below the action's 60 s: the cap applied (generous bound for a loaded machine).
    expect(record.attempts[0]?.durationMs).toBeLessThan(10_000);
    await kill(worker, 'SIGTERM');
  }, 90_000);
});
