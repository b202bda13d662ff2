import { describe, expect, it } from 'vitest';
import { readResults, setupRun, spawnWorker, waitFor, trackRuns } from '../support/harness.js';

const { children, cleanups } = trackRuns();

describe('circuit breaker', () => {
  it('opens on a failing receiver, defers jobs without using attempts, and delivers once it recovers', async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    let failing = true;
    receiver.handler = (_r, res) => (failing ? res.writeHead(500).end('down') : res.writeHead(200).end('{}'));
    await ctx.store.put({
      id: 'fragile',
      name: 'fragile',
      endpoint: { url: receiver.url, path: '/f', method: 'POST' },
      body: { a: 1 },
      retry: { maxAttempts: 10, backoff: { type: 'fixed', delayMs: 20, maxDelayMs: 20 } },
      circuitBreaker: { failureRatio: 0.5, minRequests: 5, windowMs: 10_000, openMs: 500 },
    });
    // One at a time, so the circuit opens before many requests are in flight.
    const jobs = await ctx.producer.enqueueMany(Array.from({ length: 20 }, () => ({ actionId: 'fragile', params: {} })));
    expect(jobs.every((j) => 'jobId' in j)).toBe(true);
    spawnWorker(config, children, { WORKER_CONCURRENCY: '1' });
    await new Promise((r) => setTimeout(r, 2500));
    const duringOutage = receiver.requests.length;
    failing = false;
    await waitFor(async () => (await ctx.redis.xlen(ctx.keys.results)) >= 20, 30_000, '20 outcomes');
    const results = await readResults(ctx);
    console.log(
      `circuit test: ${duringOutage} requests in 2.5 s of outage (5 to open, then one probe per 500 ms), then ${receiver.requests.length - duringOutage} after recovery`,
    );
    expect(results.every((r) => r.outcome === 'delivered')).toBe(true);
    // Without the breaker, retries 20 ms apart would have sent about a hundred requests in 2.5 s.
    expect(duringOutage).toBeLessThanOrEqual(5 + 6);
    // The job that kept failing used its attempts only on real requests: none was dead-lettered.
    expect(Math.max(...results.map((r) => Number(r.attempts)))).toBeLessThanOrEqual(duringOutage + 1);
  }, 60_000);
});
