import { createServer, type Server } from 'node:http';
import { afterAll, describe, expect, it } from 'vitest';
import { maxInWindow } from '../../bench/stats.js';
import { createEgressGuard } from '../../src/delivery/egress-guard.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import { createTokenProvider } from '../../src/delivery/token-provider.js';
import { createLogger } from '../../src/logger.js';
import { readResults, removePrefixKeys, startReceiver, startTestWorker, testConfig, testContext, waitFor } from '../support/harness.js';

/*
 * The promises of docs/delivery.md "Rate limits", "Back-pressure" and the circuit breaker with two
 * workers sharing one Redis (in-process workers, each on its own connections and its own limiter,
 * as two processes would have), a limit changed while jobs wait, and token endpoints that hang or
 * answer garbage. Counts per window with a margin, not timing thresholds.
 */

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function setup(env: NodeJS.ProcessEnv = {}) {
  const receiver = await startReceiver();
  const config = testConfig();
  const ctx = await testContext(config, { ...process.env, ...env });
  cleanups.push(async () => {
    await ctx.close();
    await receiver.close();
    await removePrefixKeys(config);
  });
  const startWorkers = async (n: number) => {
    for (let i = 0; i < n; i++) {
      const w = await startTestWorker(config, { ...process.env, ...env });
      cleanups.push(() => w.stop());
    }
  };
  return { receiver, config, ctx, startWorkers };
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

describe('a limit lowered while jobs wait for their slots', () => {
  it('holds the new limit (2x margin) once the change has reached the workers', async () => {
    const { receiver, ctx, startWorkers } = await setup();
    const def = (max: number) => ({
      id: 'lowered',
      name: 'lowered',
      endpoint: { url: receiver.url, path: '/l', method: 'POST' },
      body: { a: 1 },
      rateLimit: { max, perMs: 1000 },
    });
    await ctx.store.put(def(10));
    await ctx.producer.enqueueMany(Array.from({ length: 60 }, () => ({ actionId: 'lowered', params: {} })));
    await startWorkers(2);
    await waitFor(() => receiver.requests.length >= 1, 10_000, 'the first request');
    // The third party asks for less: 1 per second from now on.
    await ctx.store.put(def(1));
    const changedAt = Date.now();
    await new Promise((r) => setTimeout(r, 6000));
    // Docs: an update reaches running workers within a second; 1.5 s allowed, then 4.5 s counted.
    const after = receiver.requests.filter((r) => r.at >= changedAt + 1500).map((r) => r.at);
    const peak = maxInWindow(after, 1000);
    expect(peak, 'requests in the busiest 1000 ms window after the limit became max 1 per 1000 ms').toBeLessThanOrEqual(2);
  }, 60_000);
});

describe('circuit breaker across two workers', () => {
  it('defers (never dead-letters) the jobs arriving while open, sends nothing while open, and delivers all once recovered', async () => {
    const { receiver, ctx, startWorkers } = await setup();
    let failing = true;
    receiver.handler = (_r, res) => (failing ? res.writeHead(500).end('down') : res.writeHead(200).end('{}'));
    await ctx.store.put({
      id: 'fragile2',
      name: 'fragile2',
      endpoint: { url: receiver.url, path: '/f', method: 'POST' },
      body: { a: 1 },
      retry: { maxAttempts: 2, backoff: { type: 'fixed', delayMs: 20, maxDelayMs: 20 } },
      circuitBreaker: { failureRatio: 0.5, minRequests: 4, windowMs: 10_000, openMs: 2000 },
    });
    await startWorkers(2);
    // Open it with 4 failing jobs (each allowed 2 attempts).
    await ctx.producer.enqueueMany(Array.from({ length: 4 }, () => ({ actionId: 'fragile2', params: {} })));
    await waitFor(
      async () => (await ctx.redis.hget(ctx.keys.circuit('127.0.0.1:' + new URL(receiver.url).port), 'state')) === 'open',
      10_000,
      'open',
    );
    const openedAt = Date.now();
    const before = receiver.requests.length;
    const late = await ctx.producer.enqueueMany(Array.from({ length: 20 }, () => ({ actionId: 'fragile2', params: {} })));
    await new Promise((r) => setTimeout(r, 1500));
    const whileOpen = receiver.requests.filter((r) => r.at > openedAt + 100 && r.at < openedAt + 1500).length;
    failing = false;
    await waitFor(async () => (await ctx.redis.xlen(ctx.keys.results)) >= 24, 30_000, '24 outcomes');
    const results = await readResults(ctx);
    const lateIds = new Set(late.flatMap((j) => ('jobId' in j ? [j.jobId] : [])));
    const lateResults = results.filter((r) => lateIds.has(r.jobId ?? ''));
    console.log(
      `circuit: ${before} requests to open it, ${whileOpen} while open; late jobs ${lateResults.map((r) => r.outcome).join(',')}`,
    );
    expect(whileOpen).toBe(0);
    expect(lateResults).toHaveLength(20);
    expect(lateResults.every((r) => r.outcome === 'delivered' && r.attempts === '1')).toBe(true);
  }, 60_000);
});

describe('token endpoints that hang or answer garbage', () => {
  const secret = 'limits-client-secret-XYZ';
  async function tokenServer(handler: (res: import('node:http').ServerResponse) => void): Promise<{ url: string; hits: () => number }> {
    let hits = 0;
    const server: Server = createServer((req, res) => {
      req.resume();
      hits++;
      handler(res);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(
      () =>
        new Promise((r) => {
          server.closeAllConnections();
          server.close(() => r());
        }),
    );
    return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}/token`, hits: () => hits };
  }

  it('one request for 20 concurrent callers; a hang is a retryable auth error, garbage a final one, neither naming the secret', async () => {
    const { ctx } = await setup({ ACTION_SECRET_LIMITS_TOK: secret });
    const logLines: string[] = [];
    const tokens = createTokenProvider({
      redis: ctx.redis,
      keys: ctx.keys,
      sender: createHttpSender({ guard: createEgressGuard({ allowPrivate: false, allowHosts: ['127.0.0.1'] }) }),
      secrets: ctx.secrets,
      logger: createLogger('debug', { write: (l: string) => void logLines.push(l) }),
      userAgent: 'test',
      timeoutMs: 500,
    });
    const auth = (url: string) => ({
      type: 'oauth2ClientCredentials' as const,
      tokenUrl: url,
      clientId: 'c',
      clientSecret: { env: 'ACTION_SECRET_LIMITS_TOK' },
      clientAuth: 'body' as const,
    });
    const hang = await tokenServer(() => undefined);
    const hung = await Promise.allSettled(Array.from({ length: 20 }, () => tokens.get(auth(hang.url), 'a')));
    expect(hang.hits()).toBe(1);
    for (const h of hung) {
      expect(h.status).toBe('rejected');
      const err = (h as PromiseRejectedResult).reason as { retryable?: boolean; message: string };
      expect(err.retryable).toBe(true);
      expect(err.message).not.toContain(secret);
    }
    const garbage = await tokenServer((res) => res.writeHead(200, { 'content-type': 'text/html' }).end(`<html>${secret}</html>`));
    const bad = await Promise.allSettled(Array.from({ length: 20 }, () => tokens.get(auth(garbage.url), 'b')));
    expect(garbage.hits()).toBe(1);
    for (const b of bad) {
      const err = (b as PromiseRejectedResult).reason as { retryable?: boolean; message: string };
      expect(err.retryable).toBe(false);
      expect(err.message).not.toContain(secret);
    }
    expect(logLines.join('\n')).not.toContain(secret);
  }, 30_000);
});
