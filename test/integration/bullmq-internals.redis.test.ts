import { createRequire } from 'node:module';
import { Worker, type Job } from 'bullmq';
import { afterAll, describe, expect, it } from 'vitest';
import { FRESH_PRIORITY } from '../../src/queue/delivery-queue.js';
import {
  ADD_PRIORITIZED_LUA,
  BULLMQ_VERSION,
  ENDED_STATE,
  JOB_FIELDS,
  endedOutcome,
  jobHashKey,
  moveToDelayedWithPriority,
  storedOptionsTemplate,
} from '../../src/queue/bullmq-internals.js';
import { luaScript } from '../../src/redis/lua-script.js';
import { setupRun } from '../support/harness.js';

// What the relay reads and writes inside BullMQ, checked on a real Redis. When this file fails
// after a BullMQ upgrade, src/queue/bullmq-internals.ts is the one place to adapt.
const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** A context whose actions `a` and `b` exist, so that the producer takes jobs for them. */
async function setup() {
  const run = await setupRun(cleanups);
  for (const id of ['a', 'b']) {
    await run.ctx.store.put({ id, name: id, endpoint: { url: run.receiver.url, method: 'POST' } });
  }
  return run;
}

async function takeJob(worker: Worker, token: string): Promise<Job> {
  const job = (await worker.getNextJob(token)) as Job | undefined;
  if (!job) throw new Error('no job to take');
  return job;
}

describe('BullMQ internals the relay relies on', () => {
  it('are checked against the installed BullMQ version', () => {
    const installed = (createRequire(import.meta.url)('bullmq/package.json') as { version: string }).version;
    expect(installed).toBe(BULLMQ_VERSION);
  });

  it('keep a job in a hash at RelayKeys.jobKey, with the fields the relay adds', async () => {
    const { ctx } = await setup();
    const { jobId: id } = await ctx.producer.enqueue({ actionId: 'a', params: {} });
    const job = (await ctx.queue.getJob(id)) as Job;
    expect(jobHashKey(job)).toBe(ctx.keys.jobKey(id));
    expect(await ctx.redis.hget(ctx.keys.jobKey(id), 'name')).toBe('a');
    expect(await ctx.redis.hget(ctx.keys.jobKey(id), JOB_FIELDS.priority)).toBe(String(FRESH_PRIORITY));

    const record = { attempt: 1, startedAt: new Date().toISOString(), durationMs: 3, request: { method: 'POST', url: 'u', headers: {} } };
    await ctx.outcomes.recordAttempt(ctx.keys, id, record);
    expect(await ctx.redis.hget(ctx.keys.jobKey(id), JOB_FIELDS.attempt(1))).toBe(JSON.stringify(record));
    expect(await ctx.outcomes.attemptsOf(ctx.keys, id, 1)).toEqual([record]);
  });

  it('promote a delayed job by the priority field: 0 to the wait list, above 0 to the prioritized set', async () => {
    const { ctx } = await setup();
    const worker = new Worker(ctx.keys.queueName, null, { connection: ctx.bullConnection, prefix: ctx.keys.bullPrefix, autorun: false });
    cleanups.push(() => worker.close());
    const a = await ctx.producer.enqueue({ actionId: 'a', params: {} });
    const b = await ctx.producer.enqueue({ actionId: 'b', params: {} });
    for (const [lane, expected] of [
      [0, 'waiting'],
      [FRESH_PRIORITY, 'prioritized'],
    ] as const) {
      const job = await takeJob(worker, `t-${lane}`);
      expect([a.jobId, b.jobId]).toContain(job.id);
      await moveToDelayedWithPriority(ctx.bullConnection, job, Date.now() + 60_000, lane, `t-${lane}`);
      expect(await job.getState()).toBe('delayed');
      await job.promote();
      expect(await ctx.queue.getJobState(job.id as string)).toBe(expected);
    }
  });

  it('end a dead job as completed, with the outcome mark kept in its hash', async () => {
    const { ctx } = await setup();
    const worker = new Worker(ctx.keys.queueName, null, { connection: ctx.bullConnection, prefix: ctx.keys.bullPrefix, autorun: false });
    cleanups.push(() => worker.close());
    const { jobId: id } = await ctx.producer.enqueue({ actionId: 'a', params: {} });
    const job = await takeJob(worker, 'tok');
    const outcome = { outcome: 'dead' as const, status: 404, reason: 'http_status', attempts: 1, error: 'HTTP 404' };
    const written = await ctx.outcomes.finish(ctx.keys, {
      jobId: id,
      actionId: 'a',
      outcome: 'dead',
      status: 404,
      reason: 'http_status',
      attempts: 1,
      durationMs: 5,
      context: {},
      response: {},
    });
    expect(written).toBe(true);
    await job.moveToCompleted(outcome, 'tok', false);
    const ended = (await ctx.queue.getJob(id)) as Job;
    expect(await ended.getState()).toBe(ENDED_STATE);
    expect(endedOutcome(ended)).toEqual(outcome);
    expect(await ctx.redis.hget(ctx.keys.jobKey(id), JOB_FIELDS.outcome)).toBe('dead');
    // The mark makes a rerun after a crash a no-op.
    expect(
      await ctx.outcomes.finish(ctx.keys, {
        jobId: id,
        actionId: 'a',
        outcome: 'delivered',
        status: 200,
        reason: '',
        attempts: 2,
        durationMs: 5,
        context: {},
        response: {},
      }),
    ).toBe(false);
  });

  it('take a job added by ADD_PRIORITIZED_LUA as one added by Queue.add: same hash, same state, served in add order', async () => {
    const { ctx } = await setup();
    const queue = ctx.queue;
    const add = luaScript(
      `${ADD_PRIORITIZED_LUA} addPrioritizedJob(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]) return 0`,
    );
    const data = { params: { precise: 0.30000000000000004, list: [], text: 'a/"b"' }, context: { profileId: 'p1' } };
    const timestamp = Date.now() - 1000;
    const byBull = await queue.add('a', data, { jobId: 'by-bull', priority: FRESH_PRIORITY, timestamp });
    const template = storedOptionsTemplate(queue);
    await add.run(ctx.redis, 0, ctx.keys.jobKey(''), 'by-script', 'a', JSON.stringify(data), template, timestamp, FRESH_PRIORITY);

    const hash = async (id: string) => {
      const h = await ctx.redis.hgetall(ctx.keys.jobKey(id));
      return { ...h, opts: { ...(JSON.parse(h.opts as string) as object), jobId: 'x' } };
    };
    expect(await hash('by-script')).toEqual(await hash('by-bull'));
    expect(await queue.getJobState('by-script')).toBe('prioritized');
    const job = (await queue.getJob('by-script')) as Job;
    expect(job.data).toEqual(byBull.data);
    expect(job.opts).toEqual({ ...byBull.opts, jobId: 'by-script' });
    expect(job.timestamp).toBe(timestamp);
    const events = await ctx.redis.xrange(`${ctx.keys.jobKey('')}events`, '-', '+');
    const about = (id: string) => events.filter(([, f]) => f.includes(id)).map(([, f]) => f[1]);
    expect(about('by-script')).toEqual(about('by-bull'));

    // A second add of the same id changes nothing.
    await add.run(ctx.redis, 0, ctx.keys.jobKey(''), 'by-script', 'b', '{}', template, timestamp, FRESH_PRIORITY);
    expect(await ctx.redis.hget(ctx.keys.jobKey('by-script'), 'name')).toBe('a');

    // A worker is woken by the marker and serves both, in the order they were added.
    const worker = new Worker(ctx.keys.queueName, null, { connection: ctx.bullConnection, prefix: ctx.keys.bullPrefix, autorun: false });
    cleanups.push(() => worker.close());
    expect((await takeJob(worker, 't1')).id).toBe('by-bull');
    expect((await takeJob(worker, 't2')).id).toBe('by-script');
  });

  it('end a delivered job through the short finish script exactly as through the general one', async () => {
    const { ctx } = await setup();
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push((await ctx.producer.enqueue({ actionId: 'a', params: {}, idempotencyKey: `idem-${i}` })).jobId);
    const delivered = (jobId: string, attempts: number) => ({
      jobId,
      actionId: 'a',
      outcome: 'delivered' as const,
      status: 201,
      reason: '',
      attempts,
      durationMs: 12,
      context: { journeyId: 'j"1' },
      response: { id: 'r-1', n: [1, 2] },
    });
    const firstMinute = Math.floor(Date.now() / 60_000);
    // Without the idempotency key the general script runs (it reads the key from the job's data).
    expect(await ctx.outcomes.finish(ctx.keys, delivered(ids[0] as string, 1))).toBe(true);
    expect(await ctx.outcomes.finish(ctx.keys, { ...delivered(ids[1] as string, 1), idempotencyKey: 'idem-1' })).toBe(true);
    expect(await ctx.outcomes.finish(ctx.keys, delivered(ids[2] as string, 3))).toBe(true);
    expect(await ctx.outcomes.finish(ctx.keys, { ...delivered(ids[3] as string, 3), idempotencyKey: 'idem-3', replayOf: 'dl-9' })).toBe(
      true,
    );
    // A rerun is a no-op either way.
    expect(await ctx.outcomes.finish(ctx.keys, { ...delivered(ids[1] as string, 2), idempotencyKey: 'idem-1' })).toBe(false);
    // Jobs without an idempotency key: the key is the job id (the short script is not sent it).
    for (let i = 4; i < 6; i++) ids.push((await ctx.producer.enqueue({ actionId: 'a', params: {} })).jobId);
    expect(await ctx.outcomes.finish(ctx.keys, delivered(ids[4] as string, 1))).toBe(true);
    expect(await ctx.outcomes.finish(ctx.keys, { ...delivered(ids[5] as string, 1), idempotencyKey: ids[5] })).toBe(true);

    const entries = (await ctx.redis.xrange(ctx.keys.results, '-', '+')).map(([, f]) => f);
    const normal = (f: string[], i: number) => f.map((v) => (v === ids[i] ? 'ID' : v === `idem-${i}` ? 'IDEM' : v));
    expect(normal(entries[1] as string[], 1)).toEqual(normal(entries[0] as string[], 0));
    expect(normal(entries[3] as string[], 3)).toEqual([...normal(entries[2] as string[], 2), 'replayOf', 'dl-9']);
    expect(normal(entries[5] as string[], 5)).toEqual(normal(entries[4] as string[], 4));
    expect(entries[5]).toEqual(expect.arrayContaining(['idempotencyKey', ids[5]]));
    for (const id of ids) expect(await ctx.redis.hget(ctx.keys.jobKey(id), JOB_FIELDS.outcome)).toBe('delivered');
    expect(await ctx.redis.hgetall(ctx.keys.outcomeCounts)).toEqual({ delivered: '6' });
    // Summed over the minutes the finishes spanned (a minute may have turned meanwhile).
    const activity: Record<string, number> = {};
    for (let m = firstMinute; m <= Math.floor(Date.now() / 60_000); m++) {
      const counts = Object.entries(await ctx.redis.hgetall(ctx.keys.activity(m)));
      for (const [k, v] of counts) activity[k] = (activity[k] ?? 0) + Number(v);
      if (counts.length > 0) expect(await ctx.redis.ttl(ctx.keys.activity(m))).toBeGreaterThan(3600);
    }
    expect(activity).toEqual({ 'a|d': 6, 'a|r': 4 });
  });
});
