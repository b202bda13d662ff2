import { Worker, type Job } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config/config.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import { getJobStatus } from '../../src/queue/job-status.js';
import { getStats } from '../../src/queue/stats.js';
import type { JobOutcome } from '../../src/queue/job-schema.js';
import { removePrefixKeys, testConfig, testContext, waitFor } from '../support/harness.js';

/*
 * The job status read against BullMQ's own moves (bullmq 5): a plain BullMQ worker stands in for
 * ours, so that each moment of a job's end can be held and read.
 */

let config: Config;
let ctx: RelayContext;
const workers: Worker[] = [];

beforeAll(async () => {
  config = testConfig();
  ctx = await testContext(config);
});

afterAll(async () => {
  await Promise.all(workers.map((w) => w.close(true)));
  await ctx.close();
  await removePrefixKeys(config);
});

/** A BullMQ worker on the test's queue running `processor`. */
function worker(processor: (job: Job) => Promise<unknown>): Worker {
  const w = new Worker(ctx.keys.queueName, processor, { connection: ctx.bullConnection, prefix: ctx.keys.bullPrefix, concurrency: 4 });
  workers.push(w);
  return w;
}

const status = (id: string) => getJobStatus(ctx.queues, ctx.redis, id);

describe('GET /v1/jobs/:id reads one consistent state', () => {
  it('a job whose end is being written reads as active until BullMQ completes it, then as its results entry says', async () => {
    let release: (() => void) | undefined;
    const held = new Promise<void>((r) => (release = r));
    const w = worker(async (job) => {
      // Our finish script has run (results entry written), BullMQ's completion has not.
      await ctx.outcomes.finish(ctx.keys, {
        jobId: job.id as string,
        actionId: job.name,
        outcome: 'delivered',
        status: 204,
        reason: '',
        attempts: 1,
        durationMs: 5,
        context: {},
        response: {},
      });
      await held;
      return { outcome: 'delivered', status: 204, reason: null, attempts: 1, response: {} } satisfies JobOutcome;
    });
    const job = await ctx.queue.add('hold', { params: {}, context: {} }, { jobId: 'held-1' });
    await waitFor(async () => (await ctx.redis.xlen(ctx.keys.results)) === 1, 10_000, 'the results entry');
    expect(await status(job.id as string)).toMatchObject({ state: 'active', attempts: 0 });
    release?.();
    await waitFor(async () => (await status('held-1'))?.state === 'delivered', 10_000, 'delivered');
    expect(await status('held-1')).toMatchObject({ state: 'delivered', attempts: 1, result: { status: 204 } });
    const [entry] = (await ctx.redis.xrange(ctx.keys.results, '-', '+')) as [string, string[]][];
    expect(entry?.[1]).toEqual(expect.arrayContaining(['idempotencyKey', 'held-1', 'outcome', 'delivered']));
    expect((await getStats(ctx.queues, ctx.redis)).queue).toMatchObject({ delivered: 1, dead: 0 });
    await w.close();
  });

  it("a job in BullMQ's failed set is dead with the reason that put it there", async () => {
    const w = worker(async (job) => {
      if (job.name === 'http') {
        await ctx.outcomes.recordAttempt(ctx.keys, job.id as string, {
          attempt: 1,
          startedAt: new Date().toISOString(),
          durationMs: 3,
          request: { method: 'POST', url: 'http://127.0.0.1/x', headers: {} },
          response: { status: 503, headers: {}, body: '' },
        });
      }
      if (job.name === 'conn') {
        await ctx.outcomes.recordAttempt(ctx.keys, job.id as string, {
          attempt: 1,
          startedAt: new Date().toISOString(),
          durationMs: 3,
          request: { method: 'POST', url: 'http://127.0.0.1/x', headers: {} },
          error: { code: 'ECONNREFUSED', message: 'connect ECONNREFUSED 127.0.0.1:9' },
        });
      }
      throw new Error(`attempt failed: ${job.name}`);
    });
    const opts = { attempts: 1 };
    for (const name of ['http', 'conn', 'bare', 'stall'])
      await ctx.queue.add(name, { params: {}, context: {} }, { ...opts, jobId: `failed-${name}` });
    await waitFor(async () => (await ctx.queue.getFailedCount()) === 4, 10_000, 'four failed jobs');
    await w.close();
    // BullMQ's stalled check writes this reason when a job stalled more than maxStalledCount times.
    await ctx.redis.hset(ctx.keys.jobKey('failed-stall'), 'failedReason', 'job stalled more than allowable limit');

    expect(await status('failed-http')).toMatchObject({ state: 'dead', attempts: 1, error: { reason: 'http_status', status: 503 } });
    expect(await status('failed-conn')).toMatchObject({ state: 'dead', error: { reason: 'ECONNREFUSED', status: null } });
    expect(await status('failed-bare')).toMatchObject({ state: 'dead', error: { reason: 'unknown', message: 'attempt failed: bare' } });
    expect(await status('failed-stall')).toMatchObject({ state: 'dead', error: { reason: 'stalled' } });
    expect((await getStats(ctx.queues, ctx.redis)).queue.failed).toBe(4);
  });

  it('answers null for an id nobody enqueued', async () => {
    expect(await status('never-enqueued')).toBeNull();
  });
});
