import { createServer, type Server } from 'node:http';
import { afterAll, describe, expect, it } from 'vitest';
import { createEgressGuard } from '../../src/delivery/egress-guard.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import { createTokenProvider } from '../../src/delivery/token-provider.js';
import { createLogger } from '../../src/logger.js';
import { readResults, removePrefixKeys, startReceiver, startTestWorker, testConfig, testContext, waitFor } from '../support/harness.js';

/*
 * A limit changed while jobs wait, a circuit across two workers, and token
 * endpoints that hang or answer garbage.
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

function maxInWindow(times: number[], ms: number): number {
  const t = [...times].sort((a, b) => a - b);
  let best = 0;
  for (let i = 0, j = 0; i < t.length; i++) {
    while ((t[i] as number) - (t[j] as number) >= ms) j++;
    best = Math.max(best, i - j + 1);
  }
  return best;
}

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
