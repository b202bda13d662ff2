import { describe, expect, it } from 'vitest';
import { WORKER_START_MS, readResults, setupRun, spawnWorker, waitFor, trackRuns } from '../support/harness.js';

const { children, cleanups } = trackRuns();

describe('back-pressure without a rateLimit', () => {
  it('a 429 with Retry-After pauses the whole host for every worker, using no attempts, then delivers', async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    let first = true;
    receiver.handler = (_r, res) => {
      if (first) {
        first = false;
        return res.writeHead(429, { 'retry-after': '2' }).end('slow down');
      }
      res.writeHead(200).end('{}');
    };
    const action = (id: string) => ({
      id,
      name: id,
      endpoint: { url: receiver.url, path: `/${id}`, method: 'POST' },
      body: {},
      retry: { maxAttempts: 3, backoff: { type: 'fixed', delayMs: 10, maxDelayMs: 10_000 } },
    });
    // Two actions on one host: one budget, one pause, though neither declares a rateLimit.
    await ctx.store.put(action('bp_a'));
    await ctx.store.put(action('bp_b'));
    spawnWorker(config, children);
    spawnWorker(config, children);
    await ctx.producer.enqueue({ actionId: 'bp_a', params: {} });
    await waitFor(() => receiver.requests.length >= 1, WORKER_START_MS, 'the 429');
    const pausedAt = receiver.requests[0]!.at;
    // Past the 250 ms for which a worker trusts its last look at the pause.
    await new Promise((r) => setTimeout(r, 400));
    await ctx.producer.enqueueMany(Array.from({ length: 20 }, (_, i) => ({ actionId: i % 2 ? 'bp_a' : 'bp_b', params: {} })));
    await waitFor(async () => (await ctx.redis.xlen(ctx.keys.results)) >= 21, 15_000, '21 outcomes');
    const later = receiver.requests.slice(1).map((r) => r.at - pausedAt);
    console.log(`back-pressure test: after the 429, the first request came ${Math.min(...later)} ms later (Retry-After: 2)`);
    expect(later).toHaveLength(21);
    expect(Math.min(...later)).toBeGreaterThanOrEqual(1900);
    const results = await readResults(ctx);
    expect(results.every((r) => r.outcome === 'delivered')).toBe(true);
    // Only the job that got the 429 used a second attempt; waiting used none.
    expect(results.map((r) => Number(r.attempts)).sort()).toEqual([...Array(20).fill(1), 2]);
  }, 100_000);
  it("caps a day-long Retry-After at the action's maxDelayMs, for the key's pause as for the retry", async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    let first = true;
    receiver.handler = (_r, res) => {
      if (first) {
        first = false;
        return res.writeHead(429, { 'retry-after': '86400' }).end('daily quota used up');
      }
      res.writeHead(200).end('{}');
    };
    await ctx.store.put({
      id: 'quota',
      name: 'quota',
      endpoint: { url: receiver.url, method: 'POST' },
      body: {},
      retry: { maxAttempts: 3, backoff: { type: 'fixed', delayMs: 10, maxDelayMs: 1000 } },
    });
    spawnWorker(config, children);
    await ctx.producer.enqueue({ actionId: 'quota', params: {} });
    await waitFor(() => receiver.requests.length >= 1, WORKER_START_MS, 'the 429');
    await ctx.producer.enqueueMany(Array.from({ length: 5 }, () => ({ actionId: 'quota', params: {} })));
    await waitFor(async () => (await ctx.redis.xlen(ctx.keys.results)) >= 6, 10_000, 'six outcomes within seconds, not a day');
    expect((await readResults(ctx)).every((r) => r.outcome === 'delivered')).toBe(true);
  }, 90_000);
});
