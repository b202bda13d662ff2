import { createServer, type Server } from 'node:http';
import { afterAll, describe, expect, it } from 'vitest';
import { readResults, removePrefixKeys, startReceiver, startTestWorker, testConfig, testContext, waitFor } from '../support/harness.js';

/*
 * The promises of docs/delivery.md "Rate limits" and "Back-pressure" with two workers
 * sharing one Redis (in-process workers, each on its own connections and its own limiter, as two
 * processes would have). Counts per window with a margin, not timing thresholds.
 */

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function setup(env: NodeJS.ProcessEnv = {}) {
  const receiver = await startReceiver();
  const config = testConfig();
  const ctx = await testContext(config);
  cleanups.push(async () => {
    await ctx.close();
    await receiver.close();
    await removePrefixKeys(config);
  });
  const workers: Awaited<ReturnType<typeof startTestWorker>>[] = [];
  const startWorkers = async (n: number) => {
    for (let i = 0; i < n; i++) {
      const w = await startTestWorker(config, { ...process.env, ...env });
      workers.push(w);
      cleanups.push(() => w.stop());
    }
  };
  return { receiver, config, ctx, startWorkers };
}

/** Most requests seen in any window of `ms` (sliding over request times). */
function maxInWindow(times: number[], ms: number): number {
  const t = [...times].sort((a, b) => a - b);
  let best = 0;
  for (let i = 0, j = 0; i < t.length; i++) {
    while ((t[i] as number) - (t[j] as number) >= ms) j++;
    best = Math.max(best, i - j + 1);
  }
  return best;
}

describe('a slot taken before the token is fetched', () => {
  it('keeps max 4 per 1000 ms (2x margin) while the token endpoint takes 4 s to answer, over 2 workers', async () => {
    let tokenRequests = 0;
    const tokenServer: Server = createServer((req, res) => {
      req.resume();
      tokenRequests++;
      setTimeout(
        () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"access_token":"slow-token-1","expires_in":3600}'),
        4000,
      );
    });
    await new Promise<void>((r) => tokenServer.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => tokenServer.close(() => r())));
    const { receiver, ctx, startWorkers } = await setup({ ACTION_SECRET_LIMITS_SLOW_TOKEN: 'slow-token-client-secret' });
    await ctx.store.put({
      id: 'slow_token',
      name: 'slow_token',
      endpoint: { url: receiver.url, path: '/t', method: 'POST' },
      auth: {
        type: 'oauth2ClientCredentials',
        tokenUrl: `http://127.0.0.1:${(tokenServer.address() as { port: number }).port}/token`,
        clientId: 'c',
        clientSecret: { env: 'ACTION_SECRET_LIMITS_SLOW_TOKEN' },
      },
      body: { a: 1 },
      rateLimit: { max: 4, perMs: 1000 },
    });
    await ctx.producer.enqueueMany(Array.from({ length: 30 }, () => ({ actionId: 'slow_token', params: {} })));
    await startWorkers(2);
    await waitFor(async () => (await ctx.redis.xlen(ctx.keys.results)) >= 30, 60_000, '30 outcomes');
    const results = await readResults(ctx);
    expect(results.every((r) => r.outcome === 'delivered')).toBe(true);
    const peak = maxInWindow(
      receiver.requests.map((r) => r.at),
      1000,
    );
    expect(tokenRequests).toBe(1);
    expect(peak, 'requests in the busiest 1000 ms window at the sink, limit max 4 per 1000 ms').toBeLessThanOrEqual(8);
  }, 90_000);
});

describe('back-pressure and in-flight permits', () => {
  it('sends nothing on the key during a 429 Retry-After pause, even to jobs waiting for a permit', async () => {
    const { receiver, ctx, startWorkers } = await setup();
    let answered429 = 0;
    receiver.handler = (_r, res) => {
      if (answered429 === 0) {
        // The first request is slow, so that the next jobs are waiting for its permit.
        answered429 = -1;
        setTimeout(() => {
          answered429 = Date.now();
          res.writeHead(429, { 'retry-after': '3' }).end();
        }, 300);
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    };
    await ctx.store.put({
      id: 'permits',
      name: 'permits',
      endpoint: { url: receiver.url, path: '/p', method: 'POST' },
      body: { a: 1 },
      rateLimit: { max: 100, perMs: 1000, maxConcurrent: 1 },
      retry: { maxAttempts: 3, backoff: { type: 'fixed', delayMs: 10, maxDelayMs: 10_000 } },
    });
    await ctx.producer.enqueueMany(Array.from({ length: 6 }, () => ({ actionId: 'permits', params: {} })));
    await startWorkers(2);
    await waitFor(async () => (await ctx.redis.xlen(ctx.keys.results)) >= 6, 30_000, '6 outcomes');
    expect((await readResults(ctx)).every((r) => r.outcome === 'delivered')).toBe(true);
    const during = receiver.requests.filter((r) => r.at > answered429 + 5 && r.at < answered429 + 2900).map((r) => r.at - answered429);
    expect(during, 'requests received while the key was paused by Retry-After: 3').toEqual([]);
  }, 60_000);

  it('keeps maxConcurrent 2 on a key shared by two actions whose timeouts differ', async () => {
    const { receiver, ctx, startWorkers } = await setup();
    let open = 0;
    let maxOpen = 0;
    receiver.handler = (r, res) => {
      open++;
      maxOpen = Math.max(maxOpen, open);
      // The long action's requests take 9 s; the short one's answer at once.
      setTimeout(
        () => {
          open--;
          res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        },
        r.url.startsWith('/long') ? 9000 : 0,
      );
    };
    const limit = { key: 'shared-budget', max: 1000, perMs: 1000, maxConcurrent: 2 };
    await ctx.store.put({
      id: 'long',
      name: 'long',
      endpoint: { url: receiver.url, path: '/long', method: 'POST', timeoutMs: 30_000 },
      body: { a: 1 },
      rateLimit: limit,
    });
    await ctx.store.put({
      id: 'short',
      name: 'short',
      endpoint: { url: receiver.url, path: '/short', method: 'POST', timeoutMs: 100 },
      body: { a: 1 },
      rateLimit: limit,
    });
    await startWorkers(2);
    await ctx.producer.enqueue({ actionId: 'long', params: {} });
    await waitFor(() => open === 1, 10_000, 'the long request in flight');
    await ctx.producer.enqueue({ actionId: 'short', params: {} });
    await waitFor(async () => (await ctx.redis.xlen(ctx.keys.results)) >= 1, 10_000, 'the short one delivered');
    // The short action's lease was 3 x 100 + 5000 ms; the long one's request is still in flight.
    await new Promise((r) => setTimeout(r, 5800));
    await ctx.producer.enqueueMany(Array.from({ length: 3 }, () => ({ actionId: 'long', params: {} })));
    await new Promise((r) => setTimeout(r, 1500));
    expect(maxOpen, 'requests open at once at the receiver, maxConcurrent 2').toBeLessThanOrEqual(2);
  }, 60_000);
});

describe('two workers, a burst, a binding limit', () => {
  it('keeps max 10 per 1000 ms (2x margin) for 60 jobs over 2 workers', async () => {
    const { receiver, ctx, startWorkers } = await setup();
    await ctx.store.put({
      id: 'burst',
      name: 'burst',
      endpoint: { url: receiver.url, path: '/b', method: 'POST' },
      body: { a: 1 },
      rateLimit: { max: 10, perMs: 1000 },
    });
    await ctx.producer.enqueueMany(Array.from({ length: 60 }, () => ({ actionId: 'burst', params: {} })));
    await startWorkers(2);
    await waitFor(async () => (await ctx.redis.xlen(ctx.keys.results)) >= 60, 30_000, '60 outcomes');
    const peak = maxInWindow(
      receiver.requests.map((r) => r.at),
      1000,
    );
    expect(receiver.requests).toHaveLength(60);
    expect(peak).toBeLessThanOrEqual(20);
  }, 60_000);
});

describe('a Retry-After pause longer than maxWaitMs', () => {
  it("defers the key's jobs through the pause (no attempt used) instead of dead-lettering them capped", async () => {
    const { receiver, ctx, startWorkers } = await setup();
    let answered429 = 0;
    receiver.handler = (_r, res) => {
      if (answered429 === 0) {
        answered429 = Date.now();
        res.writeHead(429, { 'retry-after': '3' }).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    };
    await ctx.store.put({
      id: 'short_wait',
      name: 'short_wait',
      endpoint: { url: receiver.url, path: '/s', method: 'POST' },
      body: { a: 1 },
      // A third party allowing 100/s; jobs may wait at most 1 s for a rate slot.
      rateLimit: { max: 100, perMs: 1000, maxWaitMs: 1000 },
      retry: { maxAttempts: 3, backoff: { type: 'fixed', delayMs: 10, maxDelayMs: 10_000 } },
    });
    await startWorkers(2);
    const first = await ctx.producer.enqueue({ actionId: 'short_wait', params: {} });
    await waitFor(() => answered429 > 0, 10_000, 'the 429');
    // Jobs enqueued during the 3 s pause.
    await new Promise((r) => setTimeout(r, 200));
    const during = await ctx.producer.enqueueMany(Array.from({ length: 5 }, () => ({ actionId: 'short_wait', params: {} })));
    await waitFor(async () => (await ctx.redis.xlen(ctx.keys.results)) >= 6, 30_000, '6 outcomes');
    const results = await readResults(ctx);
    const ids = new Set([first.jobId, ...during.flatMap((j) => ('jobId' in j ? [j.jobId] : []))]);
    const outcomes = results.filter((r) => ids.has(r.jobId ?? '')).map((r) => `${r.outcome}${r.reason ? `:${r.reason}` : ''}`);
    expect(outcomes, 'outcomes of the jobs of a key paused 3 s by Retry-After').toEqual(Array(6).fill('delivered'));
  }, 60_000);
});
