import net from 'node:net';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { createApiServer } from '../../src/api/api-server.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import { removePrefixKeys, testConfig, testContext } from '../support/harness.js';

/*
 * A Redis that stops answering (hung, or cut off by the network) while connections stay open:
 * BullMQ's connection retries its commands without end, yet the API answers within a bounded time.
 */

const J = { 'content-type': 'application/json' };

/**
 * A loopback TCP proxy in front of the test Redis. `hold()` keeps connections open and answers
 * nothing (a hung Redis, a lost network), keeping what each side sent; `release()` delivers it
 * late, as a Redis that comes back would answer.
 */
async function startProxy(target: URL) {
  const sockets = new Set<net.Socket>();
  const held: (() => void)[] = [];
  let mode: 'pass' | 'hold' | 'down' = 'pass';
  const server = net.createServer((client) => {
    if (mode === 'down') return void client.destroy();
    const upstream = net.connect(Number(target.port || 6379), target.hostname);
    sockets.add(client).add(upstream);
    const relay = (to: net.Socket) => (d: Buffer) => {
      if (mode === 'pass') to.write(d);
      else if (mode === 'hold') held.push(() => void (to.destroyed || to.write(d)));
    };
    client.on('data', relay(upstream));
    upstream.on('data', relay(client));
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const s of [client, upstream]) s.on('close', end).on('error', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    url: `redis://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    hold: () => void (mode = 'hold'),
    release() {
      mode = 'pass';
      for (const send of held.splice(0)) send();
    },
    async close() {
      mode = 'down';
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup() {
  const proxy = await startProxy(new URL(inject('redisUrl')));
  const cfg = testConfig({ REDIS_URL: proxy.url });
  const ctx = await testContext(cfg);
  const api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
  cleanups.push(async () => {
    await proxy.close();
    ctx.disconnect();
    await api.close().catch(() => undefined);
    cfg.REDIS_URL = inject('redisUrl');
    await removePrefixKeys(cfg);
  });
  await ctx.store.put({ id: 'ok', name: 'ok', endpoint: { url: 'http://127.0.0.1:9', method: 'POST' } });
  return { proxy, ctx, api };
}

/** The answer's status and start of body, or 'no answer' after `ms`. */
const within = (p: Promise<{ statusCode: number; body: string }>, ms = 10_000) =>
  Promise.race([
    p.then((r) => `${r.statusCode} ${r.body.slice(0, 120)}`),
    new Promise<string>((r) => setTimeout(() => r(`no answer in ${ms} ms`), ms)),
  ]);

describe('a silent Redis', () => {
  it('POST /v1/jobs, POST /v1/jobs/batch, GET /v1/jobs/:jobId and GET /v1/dlq answer 503 redis_unavailable within 10 s', async () => {
    const { proxy, api } = await setup();
    const first = await api.inject({ method: 'POST', url: '/v1/jobs', payload: '{"actionId":"ok"}', headers: J });
    const { jobId } = first.json() as { jobId: string };
    proxy.hold();
    const [ready, enq, batch, st, dlq] = await Promise.all([
      within(api.inject({ method: 'GET', url: '/readyz' })),
      within(api.inject({ method: 'POST', url: '/v1/jobs', payload: '{"actionId":"ok","idempotencyKey":"k1"}', headers: J })),
      within(api.inject({ method: 'POST', url: '/v1/jobs/batch', payload: '{"jobs":[{"actionId":"ok"}]}', headers: J })),
      within(api.inject({ method: 'GET', url: `/v1/jobs/${jobId}` })),
      within(api.inject({ method: 'GET', url: '/v1/dlq' })),
    ]);
    expect(ready).toMatch(/^503 /);
    const unavailable = expect.stringMatching(/^503 \{"error":\{"code":"redis_unavailable","message":/);
    expect({ enq, batch, st, dlq }).toEqual({ enq: unavailable, batch: unavailable, st: unavailable, dlq: unavailable });
  }, 40_000);

  it('the 503 has the security headers, and a late answer from Redis afterwards crashes nothing', async () => {
    const { proxy, api } = await setup();
    proxy.hold();
    const pending = api.inject({ method: 'POST', url: '/v1/jobs', payload: '{"actionId":"ok","idempotencyKey":"late"}', headers: J });
    expect(await within(pending)).toMatch(/^503 /);
    const res = await pending;
    expect(res.json().error.code).toBe('redis_unavailable');
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    // Redis answers now: the enqueue completes behind the sent 503 (vitest fails on an unhandled rejection).
    proxy.release();
    const retried = await api.inject({ method: 'POST', url: '/v1/jobs', payload: '{"actionId":"ok","idempotencyKey":"late"}', headers: J });
    expect(retried.statusCode, retried.body).toBe(202);
    expect((await api.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(200);
  }, 40_000);
});
