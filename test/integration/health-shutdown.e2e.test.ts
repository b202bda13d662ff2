import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../../src/config/config.js';
import { runApi } from '../../src/cli/run-api.js';
import { runWorker } from '../../src/cli/run-worker.js';
import { freePort, startPrivateRedis, type EmbeddedRedis } from '../../src/redis/embedded-redis.js';
import { LOOPBACK_ALLOWED, WORKER_START_MS, kill, startReceiver, waitFor } from '../support/harness.js';
import { createRelayContext } from '../../src/context/relay-context.js';
import { createLogger } from '../../src/logger.js';

/*
 * Health that tells the truth about Redis: listeners open without it, /readyz answers 503 with a
 * reason in bounded time when it is gone or hung, and SIGTERM ends the processes within the grace
 * period whatever Redis does. Each test runs its own redis-server, so that it can stop it.
 */

const children: ChildProcess[] = [];
const redises: EmbeddedRedis[] = [];
afterAll(async () => {
  await Promise.all(children.map((c) => kill(c, 'SIGKILL')));
  for (const r of redises) {
    const ended = r.process?.exitCode !== null || r.process?.signalCode !== null;
    if (ended) continue;
    r.process?.kill('SIGCONT');
    await r.stop();
  }
});

function configFor(redisUrl: string, extra: Record<string, string> = {}): Config {
  return loadConfig({
    REDIS_URL: redisUrl,
    ACTION_RELAY_PREFIX: 'health',
    PORT: '0',
    METRICS_PORT: '0',
    LOG_LEVEL: 'silent',
    SHUTDOWN_GRACE_MS: '1000',
    ...extra,
  });
}

/** GET that must answer before `withinMs` (the readiness bound plus scheduling slack). */
async function get(url: string, withinMs: number): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(withinMs) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const portOf = (server: { address(): unknown } | undefined) => (server?.address() as { port: number } | null)?.port ?? 0;

describe('health with Redis down', () => {
  it('api and worker open their listeners without Redis; /healthz is 200, /readyz 503 with a reason', async () => {
    const nobody = `redis://127.0.0.1:${await freePort()}`;
    const config = configFor(nobody);
    const api = await runApi(config);
    const worker = await runWorker({ ...config, METRICS_PORT: await freePort() });
    try {
      expect((await get(`${api.url}/healthz`, 2500)).status).toBe(200);
      const ready = await get(`${api.url}/readyz`, 2500);
      expect(ready.status).toBe(503);
      expect(ready.body).toMatchObject({ error: { code: 'redis_unavailable' } });
      expect(JSON.stringify(ready.body)).toMatch(/redis unavailable: connection (connecting|reconnecting|wait|close|end)/);
      const metricsUrl = `http://127.0.0.1:${portOf(worker.metricsServer)}`;
      expect((await get(`${metricsUrl}/healthz`, 2500)).status).toBe(200);
      const workerReady = await get(`${metricsUrl}/readyz`, 2500);
      expect(workerReady.status).toBe(503);
      expect(workerReady.body).toMatchObject({ error: { code: 'redis_unavailable' } });
    } finally {
      await Promise.all([api.stop(), worker.stop()]);
    }
  });

  it('/readyz of api and worker turns 503 within 2 s when Redis hangs, and 200 again when it answers', async () => {
    const redis = await startPrivateRedis();
    redises.push(redis);
    const config = configFor(redis.url);
    const api = await runApi(config);
    const worker = await runWorker({ ...config, METRICS_PORT: await freePort() });
    const workerUrl = `http://127.0.0.1:${portOf(worker.metricsServer)}`;
    try {
      await waitFor(async () => (await get(`${api.url}/readyz`, 2500)).status === 200, 10_000, 'api ready');
      await waitFor(async () => (await get(`${workerUrl}/readyz`, 2500)).status === 200, 10_000, 'worker ready');
      // A hung server: connections stay up, nothing answers.
      redis.process?.kill('SIGSTOP');
      const [apiReady, workerReady] = await Promise.all([get(`${api.url}/readyz`, 3000), get(`${workerUrl}/readyz`, 3000)]);
      expect(apiReady).toMatchObject({
        status: 503,
        body: { error: { code: 'redis_unavailable', message: expect.stringMatching(/no answer within 2000 ms/) } },
      });
      expect(workerReady).toMatchObject({ status: 503, body: { error: { code: 'redis_unavailable' } } });
      expect((await get(`${api.url}/healthz`, 1000)).status).toBe(200);
      redis.process?.kill('SIGCONT');
      await waitFor(async () => (await get(`${api.url}/readyz`, 2500)).status === 200, 10_000, 'api ready again');
    } finally {
      redis.process?.kill('SIGCONT');
      await Promise.all([api.stop(), worker.stop()]);
    }
  });
});

/** Starts `action-relay <command>` as a real process; its stdout lines are collected. */
function start(command: string, env: Record<string, string>): { child: ChildProcess; lines: string[] } {
  const child = spawn(process.execPath, ['--import', 'tsx', 'workers/action-relay.ts', command], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  const lines: string[] = [];
  let rest = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    const parts = (rest + chunk.toString('utf8')).split('\n');
    rest = parts.pop() ?? '';
    lines.push(...parts.filter((l) => l.length > 0));
  });
  child.stdout?.on('end', () => rest && lines.push(rest));
  return { child, lines };
}

describe('SIGTERM with Redis stopped', () => {
  it('the worker exits within SHUTDOWN_GRACE_MS plus a few seconds and says which job it left for takeover', async () => {
    const redis = await startPrivateRedis();
    redises.push(redis);
    // A third party that never answers: the job stays in flight.
    const receiver = await startReceiver();
    receiver.handler = () => undefined;
    const config = configFor(redis.url, { EGRESS_ALLOW_HOSTS: LOOPBACK_ALLOWED });
    const ctx = await createRelayContext(config, { logger: createLogger('silent'), processMetrics: false });
    await ctx.store.put({ id: 'hang', name: 'hang', endpoint: { url: `${receiver.url}/hang`, method: 'POST', timeoutMs: 60_000 } });
    const { jobId } = await ctx.producer.enqueue({ actionId: 'hang', params: {} });
    await ctx.close();

    const graceMs = 2000;
    const { child, lines } = start('worker', {
      REDIS_URL: redis.url,
      ACTION_RELAY_PREFIX: 'health',
      METRICS_PORT: '0',
      LOG_LEVEL: 'info',
      EGRESS_ALLOW_HOSTS: LOOPBACK_ALLOWED,
      SHUTDOWN_GRACE_MS: String(graceMs),
    });
    await waitFor(() => receiver.requests.length > 0, WORKER_START_MS, 'the request in flight');
    redis.process?.kill('SIGKILL');
    await waitFor(() => redis.process?.exitCode !== null || redis.process?.signalCode !== null, 5000, 'redis gone');

    const sent = Date.now();
    const code = await kill(child, 'SIGTERM');
    const tookMs = Date.now() - sent;
    await receiver.close();
    // Grace, then at most a few seconds of closing: measured, and bounded well below a second SIGTERM's need.
    console.log(`worker stopped ${tookMs} ms after SIGTERM with Redis down (grace ${graceMs} ms), exit code ${code}`);
    expect(tookMs).toBeLessThan(graceMs + 5000);
    const last = JSON.parse(lines.at(-1) ?? '{}') as Record<string, unknown>;
    expect(last).toMatchObject({ event: 'stopped', leftForTakeover: 1, jobIds: [jobId] });
  }, 90_000);

  it('the api exits within SHUTDOWN_GRACE_MS plus a few seconds with Redis gone, with a final JSON line', async () => {
    const redis = await startPrivateRedis();
    redises.push(redis);
    const port = await freePort();
    const { child, lines } = start('api', {
      REDIS_URL: redis.url,
      ACTION_RELAY_PREFIX: 'health',
      PORT: String(port),
      LOG_LEVEL: 'info',
      SHUTDOWN_GRACE_MS: '2000',
    });
    await waitFor(() => lines.some((l) => l.includes('api listening')), WORKER_START_MS, 'the api listening');
    redis.process?.kill('SIGKILL');
    await waitFor(async () => (await get(`http://127.0.0.1:${port}/readyz`, 2500)).status === 503, 5000, 'readyz 503');
    const sent = Date.now();
    await kill(child, 'SIGTERM');
    const tookMs = Date.now() - sent;
    expect(tookMs).toBeLessThan(2000 + 5000);
    expect(JSON.parse(lines.at(-1) ?? '{}')).toMatchObject({ event: 'stopped' });
  }, 90_000);
});
