import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config/config.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import { freePort, redisAnswers } from '../../src/redis/embedded-redis.js';
import {
  kill,
  readResults,
  setupRun,
  spawnWorker,
  startReceiver,
  testConfig,
  testContext,
  waitFor,
  type Receiver,
} from '../support/harness.js';

const CONCURRENCY = 32;
const children: ChildProcess[] = [];
const startWorker = (config: Config) => spawnWorker(config, children, { WORKER_CONCURRENCY: String(CONCURRENCY) });

/** Counts how often each idempotency key reached the receiver. */
function countKeys(receiver: Receiver): Map<string, number> {
  const seen = new Map<string, number>();
  for (const r of receiver.requests) {
    const k = String(r.headers['idempotency-key']);
    seen.set(k, (seen.get(k) ?? 0) + 1);
  }
  return seen;
}

async function enqueueN(ctx: RelayContext, actionId: string, n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i += 1000) {
    const batch = Array.from({ length: Math.min(1000, n - i) }, (_, j) => ({ actionId, params: {}, idempotencyKey: `key-${i + j}` }));
    for (const r of await ctx.producer.enqueueMany(batch)) if ('jobId' in r) ids.push(r.jobId);
  }
  return ids;
}

async function terminalCounts(ctx: RelayContext): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const r of await readResults(ctx)) counts.set(r.jobId as string, (counts.get(r.jobId as string) ?? 0) + 1);
  return counts;
}

afterEach(async () => {
  await Promise.all(children.splice(0).map((c) => kill(c, 'SIGKILL')));
});

describe('crash safety', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const c of cleanups) await c();
  });

  it('loses nothing when a worker is SIGKILLed twice during 5,000 deliveries', async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    receiver.handler = (_r, res) => setTimeout(() => res.writeHead(200).end('{}'), 2);
    await ctx.store.put({ id: 'kill', name: 'kill', endpoint: { url: receiver.url, path: '/k', method: 'POST' }, body: { a: 1 } });
    const ids = await enqueueN(ctx, 'kill', 5000);
    expect(ids).toHaveLength(5000);

    let victim = startWorker(config);
    startWorker(config);
    for (const at of [1000, 3000]) {
      await waitFor(() => receiver.requests.length >= at, 60_000, `${at} requests`);
      await kill(victim, 'SIGKILL');
      victim = startWorker(config);
    }
    const counts = await waitFor(
      async () => {
        const c = await terminalCounts(ctx);
        return c.size >= 5000 ? c : undefined;
      },
      90_000,
      'every job to end',
    );

    const entriesPerJob = ids.map((id) => counts.get(id) ?? 0);
    expect(entriesPerJob.filter((n) => n !== 1)).toEqual([]);
    const keys = countKeys(receiver);
    const missing = Array.from({ length: 5000 }, (_, i) => `key-${i}`).filter((k) => !keys.has(k));
    expect(missing).toEqual([]);
    const duplicates = [...keys.values()].reduce((sum, n) => sum + n - 1, 0);
    console.log(
      `kill test: 5000 jobs, 2 SIGKILLs, ${receiver.requests.length} requests, ${duplicates} duplicate deliveries (at most ${2 * CONCURRENCY} in flight at the kills)`,
    );
    expect(duplicates).toBeLessThanOrEqual(2 * CONCURRENCY);
  }, 150_000);

  it('on SIGTERM stops taking jobs and lets in-flight requests finish', async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    receiver.handler = (_r, res) => setTimeout(() => res.writeHead(200).end('{}'), 1500);
    await ctx.store.put({ id: 'term', name: 'term', endpoint: { url: receiver.url, path: '/t', method: 'POST' }, body: { a: 1 } });
    const ids = await enqueueN(ctx, 'term', 10);
    const worker = startWorker(config);
    await waitFor(() => receiver.requests.length >= 10, 30_000, 'ten requests in flight');
    const code = await kill(worker, 'SIGTERM');
    expect(code).toBe(0);
    const counts = await terminalCounts(ctx);
    expect(ids.map((id) => counts.get(id))).toEqual(ids.map(() => 1));
    expect(receiver.requests).toHaveLength(10);
  }, 60_000);

  it('on SIGTERM past SHUTDOWN_GRACE_MS exits anyway, leaving the unfinished and the waiting jobs to another worker', async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    // The first two requests are never answered: they are in flight when the grace period runs out.
    receiver.handler = (_r, res) => {
      if (receiver.requests.length > 2) res.writeHead(200).end('{}');
    };
    await ctx.store.put({
      id: 'grace',
      name: 'grace',
      endpoint: { url: receiver.url, path: '/g', method: 'POST', timeoutMs: 60_000 },
      body: { a: 1 },
    });
    const ids = await enqueueN(ctx, 'grace', 4);
    expect(ids).toHaveLength(4);
    // Two at a time, so two jobs wait behind the two in flight; no request timeout ends them first.
    const first = spawnWorker(config, children, { WORKER_CONCURRENCY: '2', SHUTDOWN_GRACE_MS: '1000', REQUEST_TIMEOUT_CAP_MS: '60000' });
    await waitFor(() => receiver.requests.length >= 2, 30_000, 'two requests in flight');

    // A worker that waited for its requests would wait a minute: 20 s is only a hung process's bound.
    const code = await Promise.race([kill(first, 'SIGTERM'), new Promise((r) => setTimeout(() => r('still running'), 20_000))]);
    expect(code).toBe(0);
    // Nothing ended, nothing was sent again: the two in flight are still active (locked until the
    // lock expires), the two behind them still waiting (BullMQ's "prioritized": new jobs carry a priority).
    expect(await readResults(ctx)).toEqual([]);
    expect(receiver.requests).toHaveLength(2);
    const states = await Promise.all(ids.map(async (id) => (await ctx.queue.getJob(id))?.getState()));
    expect(states.sort()).toEqual(['active', 'active', 'prioritized', 'prioritized']);

    // Another worker delivers the two waiting at once and takes the two over when their locks expire.
    startWorker(config);
    const counts = await waitFor(
      async () => {
        const c = await terminalCounts(ctx);
        return c.size >= 4 ? c : undefined;
      },
      60_000,
      'every job to end',
    );
    expect(ids.map((id) => counts.get(id))).toEqual([1, 1, 1, 1]);
    expect((await readResults(ctx)).map((r) => r.outcome)).toEqual(['delivered', 'delivered', 'delivered', 'delivered']);
  }, 120_000);

  it('carries on by itself when Redis stops for 5 s and comes back with its data', async () => {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'ar-restart-'));
    const startRedis = () =>
      spawn(
        'redis-server',
        ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always', '--save', ''],
        {
          stdio: 'ignore',
        },
      );
    let redis = startRedis();
    const url = `redis://127.0.0.1:${port}`;
    await waitFor(() => redisAnswers(url, 200), 10_000, 'private redis');
    const receiver = await startReceiver();
    receiver.handler = (_r, res) => setTimeout(() => res.writeHead(200).end('{}'), 3);
    const config = testConfig({ REDIS_URL: url });
    const ctx = await testContext(config);
    cleanups.push(async () => {
      await ctx.close();
      await receiver.close();
      redis.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    });
    await ctx.store.put({ id: 'restart', name: 'restart', endpoint: { url: receiver.url, path: '/r', method: 'POST' }, body: { a: 1 } });
    const ids = await enqueueN(ctx, 'restart', 2000);
    const worker = startWorker(config);

    await waitFor(() => receiver.requests.length >= 300, 60_000, '300 requests');
    await new Promise<void>((resolve) => {
      redis.once('exit', () => resolve());
      redis.kill('SIGTERM');
    });
    const stoppedAt = receiver.requests.length;
    await new Promise((r) => setTimeout(r, 5000));
    redis = startRedis();
    await waitFor(() => redisAnswers(url, 200), 10_000, 'redis back');

    const counts = await waitFor(
      async () => {
        const c = await terminalCounts(ctx).catch(() => new Map<string, number>());
        return ids.every((id) => c.has(id)) ? c : undefined;
      },
      90_000,
      'every job to end after the restart',
    );
    const outcomes = (await readResults(ctx)).filter((r) => ids.includes(r.jobId as string)).map((r) => r.outcome);
    expect(outcomes.every((o) => o === 'delivered' || o === 'dead')).toBe(true);
    console.log(
      `redis restart test: 2000 jobs, Redis down 5 s after ${stoppedAt} requests, all ${counts.size} ended (${outcomes.filter((o) => o === 'delivered').length} delivered), worker pid alive: ${worker.exitCode === null}`,
    );
    expect(worker.exitCode).toBeNull();
  }, 150_000);
});
