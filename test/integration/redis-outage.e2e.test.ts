import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiServer } from '../../src/api/api-server.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import { freePort, redisServerOnPath, startPrivateRedis, type EmbeddedRedis } from '../../src/redis/embedded-redis.js';
import type { ChildProcess } from 'node:child_process';
import { kill, spawnWorker, testConfig, testContext, waitFor } from '../support/harness.js';

// A Redis outage must be named by the metrics, not hidden behind scrape timeouts: a real worker
// process and an API on a private redis-server that this test stops. Prometheus's scrape budget
// is modelled by an abort after 3 s: a scrape that takes longer marks the target down, which is
// what paged "no worker alive" for a Redis outage.

const children: ChildProcess[] = [];
const cleanups: (() => Promise<void>)[] = [];
const SCRAPE_TIMEOUT_MS = 3000;

let redis: EmbeddedRedis;
let stopped = false;
let ctx: RelayContext;
let api: FastifyInstance;
let apiUrl: string;
let workerUrl: string;

async function scrape(url: string): Promise<string> {
  const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(SCRAPE_TIMEOUT_MS) });
  expect(res.status).toBe(200);
  return res.text();
}

/** The value of one sample line (name with its labels, as written), or undefined when absent. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** Whether a PING on a new connection goes unanswered for a second. */
async function hangs(url: string): Promise<boolean> {
  const probe = new Redis(url, { maxRetriesPerRequest: 0, lazyConnect: true });
  probe.on('error', () => undefined);
  try {
    return await Promise.race([
      probe.connect().then(() => probe.ping().then(() => false)),
      new Promise<boolean>((r) => setTimeout(() => r(true), 1000)),
    ]);
  } finally {
    probe.disconnect();
  }
}

describe.runIf(redisServerOnPath())('metrics while Redis is down', () => {
  beforeAll(async () => {
    // DEBUG SLEEP makes this Redis hang on purpose (never on a Redis shared with other tests).
    redis = await startPrivateRedis(['--enable-debug-command', 'yes']);
    const config = testConfig({ REDIS_URL: redis.url });
    ctx = await testContext(config);
    api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
    apiUrl = await api.listen({ port: 0, host: '127.0.0.1' });
    // The private server goes with every key: nothing to remove from a shared Redis.
    cleanups.push(async () => {
      // Closing waits for Redis, which is gone: connections are dropped rather than quit.
      for (const c of [ctx.redis, ctx.bullConnection]) c.disconnect();
      await Promise.race([Promise.all([api.close(), ctx.queues.close()]), new Promise((r) => setTimeout(r, 2000))]).catch(() => undefined);
      if (!stopped) await redis.stop();
    });
    const metricsPort = await freePort();
    workerUrl = `http://127.0.0.1:${metricsPort}`;
    spawnWorker(config, children, { METRICS_PORT: String(metricsPort) });
    await waitFor(
      () =>
        fetch(`${workerUrl}/healthz`)
          .then((r) => r.ok)
          .catch(() => false),
      20_000,
      'worker /healthz',
    );
    await ctx.store.put({ id: 'outage', name: 'outage', endpoint: { url: 'http://127.0.0.1:9/x', method: 'POST' }, body: { a: 1 } });
    await ctx.producer.enqueue({ actionId: 'outage', params: {}, delayMs: 600_000 });
  }, 60_000);

  afterAll(async () => {
    await Promise.all(children.splice(0).map((c) => kill(c, 'SIGKILL')));
    for (const c of cleanups.reverse()) await c();
  });

  it('reports redis_up 1 and the queue gauges while Redis answers', async () => {
    for (const url of [workerUrl, apiUrl]) {
      const text = await scrape(url);
      expect(sample(text, 'action_relay_redis_up'), url).toBe(1);
      expect(sample(text, 'action_relay_queue_jobs{state="delayed"}'), url).toBe(1);
      expect(sample(text, 'action_relay_redis_errors_total{op="ping"}'), url).toBe(0);
      expect(sample(text, 'action_relay_results_stream_maxlen'), url).toBeGreaterThan(0);
    }
  });

  it('answers within the budget while Redis hangs (DEBUG SLEEP), with redis_up 0 and the timed-out read counted', async () => {
    const blocker = new Redis(redis.url);
    try {
      const before = sample(await scrape(apiUrl), 'action_relay_redis_errors_total{op="ping"}') as number;
      // The server stops answering anyone for 8 s; this connection waits for it.
      await blocker.ping();
      const sleeping = blocker.call('DEBUG', 'SLEEP', '8');
      await waitFor(() => hangs(redis.url), 5000, 'Redis to hang');
      for (const url of [apiUrl, workerUrl]) {
        const text = await scrape(url);
        expect(sample(text, 'action_relay_redis_up'), url).toBe(0);
        expect(text, url).not.toMatch(/^action_relay_queue_jobs\{/m);
      }
      expect(sample(await scrape(apiUrl), 'action_relay_redis_errors_total{op="ping"}')).toBeGreaterThan(before);
      await sleeping;
      // Redis answers again: the next scrape reads it.
      await waitFor(async () => sample(await scrape(apiUrl), 'action_relay_redis_up') === 1, 10_000, 'redis_up back to 1');
    } finally {
      blocker.disconnect();
    }
  }, 30_000);

  it('answers every scrape within the budget once Redis is stopped, with redis_up 0, the errors counted and the queue gauges dropped', async () => {
    await redis.stop();
    stopped = true;
    for (const url of [workerUrl, apiUrl]) {
      // The first scrapes may still find the connection "ready" until ioredis sees the close.
      const text = await waitFor(
        async () => {
          const t = await scrape(url);
          return sample(t, 'action_relay_redis_up') === 0 && t;
        },
        10_000,
        `redis_up 0 on ${url}`,
      );
      expect(sample(text, 'action_relay_redis_errors_total{op="ping"}'), url).toBeGreaterThanOrEqual(1);
      for (const gone of [
        'action_relay_queue_jobs',
        'action_relay_oldest_waiting_seconds',
        'action_relay_partition_jobs',
        'action_relay_results_stream_entries',
        'action_relay_circuit_state',
      ]) {
        expect(text, `${gone} on ${url}`).not.toMatch(new RegExp(`^${gone}[{ ]`, 'm'));
      }
      // Once more: every scrape of the outage answers in time, and the error count grows.
      const again = await scrape(url);
      expect(sample(again, 'action_relay_redis_errors_total{op="ping"}')).toBeGreaterThan(
        sample(text, 'action_relay_redis_errors_total{op="ping"}') as number,
      );
    }
    // The worker process stays up and healthy, so Prometheus keeps `up` at 1 and NoWorkerAlive quiet.
    expect((await fetch(`${workerUrl}/healthz`, { signal: AbortSignal.timeout(SCRAPE_TIMEOUT_MS) })).status).toBe(200);
    expect(children[0]?.exitCode).toBeNull();
  }, 40_000);
});
