import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { createDeliveryQueues, FRESH_PRIORITY, type DeliveryQueues } from '../../src/queue/delivery-queue.js';
import { bullDeduplicationKey } from '../../src/queue/bullmq-internals.js';
import { countWaitingInLine, createOrdering, HANDOFF_GRACE_MS, queueJob, type LineEntry, type Ordering } from '../../src/queue/ordering.js';
import { createOutcomeWriter, type Outcome } from '../../src/queue/outcome-writer.js';
import { relayKeys, type PartitionKeys } from '../../src/redis/redis-connection.js';
import { getStats } from '../../src/queue/stats.js';

/*
 * The ordering scripts against a real Redis, with the clock passed in: which job of a line is in
 * the BullMQ queue after each step, what ending a job hands to the next, and what the sweep
 * recovers after a crash at each point of a handoff.
 */

const id = randomUUID().slice(0, 8);
const prefix = `{test-ordering-${id}}`;
const keys = relayKeys(prefix, 2);
const p0 = keys.partitions[0] as PartitionKeys;
let redis: Redis;
let bull: Redis;
let queues: DeliveryQueues;
let ordering: Ordering;
const clock = 1_000_000;

beforeAll(() => {
  redis = new Redis(inject('redisUrl'));
  bull = new Redis(inject('redisUrl'), { maxRetriesPerRequest: null });
  queues = createDeliveryQueues({ connection: bull, keys, retentionSeconds: 3600 });
  ordering = createOrdering({ redis, queues, now: () => clock });
});
afterAll(async () => {
  await queues.close();
  const found = await redis.keys(`{test-ordering-${id}*`);
  if (found.length > 0) await redis.unlink(...found);
  await Promise.all([redis.quit(), bull.quit()]);
});

let seq = 0;
/** An entry as the producer makes it. */
function entry(action: string, over: Partial<LineEntry> = {}): LineEntry {
  seq += 1;
  return {
    jobId: `job-${seq}`,
    name: action,
    data: JSON.stringify({ params: { n: seq }, context: {} }),
    priority: FRESH_PRIORITY,
    enqueuedAt: clock,
    ...over,
  };
}

const inQueue = async (jobId: string) => (await redis.exists(p0.jobKey(jobId))) === 1;
const line = (action: string, key: string) => redis.lrange(p0.orderingLine(action, key), 0, -1);

/** Puts a job in line the way the producer does: added to the queue when it is first. */
async function enqueue(e: LineEntry, key: string) {
  const r = await ordering.enqueue(p0, { entry: e, orderingKey: key });
  if (r.state === 'go') await ordering.moveIn(p0, e);
  return r;
}

function outcome(e: LineEntry, key: string | undefined, over: Partial<Outcome> = {}): Outcome {
  return {
    jobId: e.jobId,
    actionId: e.name,
    outcome: 'delivered',
    status: 200,
    reason: '',
    attempts: 1,
    durationMs: 5,
    context: {},
    response: {},
    errorResponse: {},
    ...(key !== undefined ? { orderingKey: key } : {}),
    ...over,
  };
}

describe('ordering lines', () => {
  it('puts only the first job of a line in the queue; other keys and other actions have lines of their own', async () => {
    const a = [entry('crm'), entry('crm'), entry('crm')];
    expect((await enqueue(a[0]!, 'p1')).state).toBe('go');
    expect((await enqueue(a[1]!, 'p1')).state).toBe('wait');
    expect((await enqueue(a[2]!, 'p1')).state).toBe('wait');
    const other = entry('crm');
    const otherAction = entry('sms');
    expect((await enqueue(other, 'p2')).state).toBe('go');
    expect((await enqueue(otherAction, 'p1')).state).toBe('go');

    expect(await line('crm', 'p1')).toEqual(a.map((e) => e.jobId));
    expect([await inQueue(a[0]!.jobId), await inQueue(a[1]!.jobId), await inQueue(a[2]!.jobId)]).toEqual([true, false, false]);
    expect(await inQueue(other.jobId)).toBe(true);
    expect(await inQueue(otherAction.jobId)).toBe(true);
    // The ones behind wait with their entry; GET /v1/jobs finds them there.
    expect((await ordering.waiting(a[2]!.jobId))?.entry).toEqual(a[2]);
  });

  it('ending the first job, delivered or dead, adds the next to the queue in the same finish', async () => {
    const outcomes = createOutcomeWriter(redis, 1000, { ordering, now: () => clock });
    const a = [entry('crm'), entry('crm'), entry('crm')];
    for (const e of a) await enqueue(e, 'q1');

    expect(await outcomes.finish(p0, outcome(a[0]!, 'q1'))).toBe(true);
    expect(await line('crm', 'q1')).toEqual([a[1]!.jobId, a[2]!.jobId]);
    expect(await inQueue(a[1]!.jobId)).toBe(true);
    expect(await inQueue(a[2]!.jobId)).toBe(false);
    // Added with the time it was enqueued (latency counts the wait in line) and its priority.
    const job = await queues.partitions[0]!.queue.getJob(a[1]!.jobId);
    expect(job?.timestamp).toBe(a[1]!.enqueuedAt);
    expect(job?.opts.priority).toBe(FRESH_PRIORITY);
    expect(job?.data).toEqual(JSON.parse(a[1]!.data));

    // A dead job lets the next one go too.
    const dead = outcome(a[1]!, 'q1', { outcome: 'dead', status: 422, reason: 'http_status' });
    expect(await outcomes.finish(p0, dead)).toBe(true);
    expect(await line('crm', 'q1')).toEqual([a[2]!.jobId]);
    expect(await inQueue(a[2]!.jobId)).toBe(true);

    expect(await outcomes.finish(p0, outcome(a[2]!, 'q1'))).toBe(true);
    expect(await redis.exists(p0.orderingLine('crm', 'q1'))).toBe(0);
    // Nothing of the line is left: no entry, no due mark.
    for (const e of a) {
      expect(await redis.hexists(p0.orderingJobs, e.jobId)).toBe(0);
      expect(await redis.zscore(p0.orderingDue, e.jobId)).toBeNull();
    }
  });

  it('a finish rerun after a crash releases nothing a second time', async () => {
    const outcomes = createOutcomeWriter(redis, 1000, { ordering, now: () => clock });
    const a = [entry('crm'), entry('crm'), entry('crm')];
    for (const e of a) await enqueue(e, 'r1');
    expect(await outcomes.finish(p0, outcome(a[0]!, 'r1'))).toBe(true);
    expect(await outcomes.finish(p0, outcome(a[0]!, 'r1'))).toBe(false);
    expect(await line('crm', 'r1')).toEqual([a[1]!.jobId, a[2]!.jobId]);
    expect(await inQueue(a[2]!.jobId)).toBe(false);
  });

  it('the next job is added inside the finish script: no entry, no due mark, nothing for the process to add', async () => {
    const outcomes = createOutcomeWriter(redis, 1000, {
      ordering: { ...ordering, moveIn: () => Promise.reject(new Error('not called')) },
      now: () => clock,
    });
    const a = [entry('crm'), entry('crm'), entry('crm')];
    for (const e of a) await enqueue(e, 'x1');
    expect(await outcomes.finish(p0, outcome(a[0]!, 'x1'))).toBe(true);
    expect(await queues.partitions[0]!.queue.getJobState(a[1]!.jobId)).toBe('prioritized');
    expect(await redis.hexists(p0.orderingJobs, a[1]!.jobId)).toBe(0);
    expect(await redis.zscore(p0.orderingDue, a[1]!.jobId)).toBeNull();
    expect(await inQueue(a[2]!.jobId)).toBe(false);
    expect(await ordering.sweep(clock + 3 * HANDOFF_GRACE_MS)).toBe(0);
  });

  it('an entry in the format of an older version (data as an object) is marked due and added by the process', async () => {
    const outcomes = createOutcomeWriter(redis, 1000, { ordering, now: () => clock });
    const first = entry('crm');
    await enqueue(first, 'y1');
    const old = entry('crm');
    await enqueue(old, 'y1');
    const { data: _data, ...header } = old;
    await redis.hset(p0.orderingJobs, old.jobId, JSON.stringify({ ...header, data: { params: { n: 'old' }, context: {} } }));
    expect((await ordering.waiting(old.jobId))?.entry.data).toBe(JSON.stringify({ params: { n: 'old' }, context: {} }));
    expect(await outcomes.finish(p0, outcome(first, 'y1'))).toBe(true);
    const job = await queues.partitions[0]!.queue.getJob(old.jobId);
    expect(job?.data).toEqual({ params: { n: 'old' }, context: {} });
    expect(await redis.zscore(p0.orderingDue, old.jobId)).toBe(String(clock));
  });

  it('a next job with a delay still to run is marked due and added by the process, to the delayed set', async () => {
    const outcomes = createOutcomeWriter(redis, 1000, { ordering, now: () => clock });
    const a = [entry('crm'), entry('crm', { delayMs: 60_000 }), entry('crm', { enqueuedAt: clock - 10_000, delayMs: 5000 })];
    for (const e of a) await enqueue(e, 'z1');
    expect(await outcomes.finish(p0, outcome(a[0]!, 'z1'))).toBe(true);
    expect(await queues.partitions[0]!.queue.getJobState(a[1]!.jobId)).toBe('delayed');
    expect(await redis.zscore(p0.orderingDue, a[1]!.jobId)).toBe(String(clock));
    // A delay already run out: added by the script, at once.
    expect(await outcomes.finish(p0, outcome(a[1]!, 'z1'))).toBe(true);
    expect(await queues.partitions[0]!.queue.getJobState(a[2]!.jobId)).toBe('prioritized');
    expect(await redis.zscore(p0.orderingDue, a[2]!.jobId)).toBeNull();
  });

  it('a crash between the finish and the add: the sweep adds the next job once its grace is over, then forgets it', async () => {
    // A writer without `ordering` is a process that died right after a finish script that left the add to it.
    const crashing = createOutcomeWriter(redis, 1000, { now: () => clock });
    const a = [entry('crm'), entry('crm')];
    for (const e of a) await enqueue(e, 's1');
    expect(await crashing.finish(p0, outcome(a[0]!, 's1'))).toBe(true);
    expect(await inQueue(a[1]!.jobId)).toBe(false);
    expect(await redis.zscore(p0.orderingDue, a[1]!.jobId)).toBe(String(clock));

    expect(await ordering.sweep(clock + HANDOFF_GRACE_MS - 1)).toBe(0);
    expect(await inQueue(a[1]!.jobId)).toBe(false);
    expect(await ordering.sweep(clock + HANDOFF_GRACE_MS + 1)).toBe(1);
    expect(await inQueue(a[1]!.jobId)).toBe(true);
    // Re-marked when added: the next sweep finds it in the queue and drops mark and entry.
    expect(await ordering.sweep(clock + 3 * HANDOFF_GRACE_MS)).toBe(0);
    expect(await redis.zscore(p0.orderingDue, a[1]!.jobId)).toBeNull();
    expect(await redis.hexists(p0.orderingJobs, a[1]!.jobId)).toBe(0);
    // Still first in line: its own end releases the line.
    expect(await line('crm', 's1')).toEqual([a[1]!.jobId]);
  });

  it('a crash between taking a place first in line and the add: the sweep adds it', async () => {
    const e = entry('crm');
    expect((await ordering.enqueue(p0, { entry: e, orderingKey: 't1' }, clock)).state).toBe('go');
    expect(await inQueue(e.jobId)).toBe(false);
    expect(await ordering.sweep(clock + HANDOFF_GRACE_MS + 1)).toBe(1);
    expect(await inQueue(e.jobId)).toBe(true);
    // Adding twice (a slow producer after the sweep) keeps one job.
    await ordering.moveIn(p0, e);
    expect(await queues.partitions[0]!.queue.getJobCountByTypes('prioritized', 'wait')).toBeGreaterThanOrEqual(1);
    expect((await queues.partitions[0]!.queue.getJob(e.jobId))?.id).toBe(e.jobId);
  });

  it('a job that ends while not first (a hand-edited queue) leaves its line without releasing the first', async () => {
    const outcomes = createOutcomeWriter(redis, 1000, { ordering, now: () => clock });
    const a = [entry('crm'), entry('crm'), entry('crm')];
    for (const e of a) await enqueue(e, 'u1');
    expect(await outcomes.finish(p0, outcome(a[1]!, 'u1'))).toBe(true);
    expect(await line('crm', 'u1')).toEqual([a[0]!.jobId, a[2]!.jobId]);
    expect(await inQueue(a[2]!.jobId)).toBe(false);
  });

  it('an idempotency key holds while the job waits in line, on the key BullMQ deduplicates on', async () => {
    const first = entry('crm');
    const dedup = { id: 'crm:order-7', ttlMs: 60_000 };
    await enqueue(entry('crm'), 'v1');
    expect(await ordering.enqueue(p0, { entry: first, orderingKey: 'v1', deduplication: dedup })).toEqual({
      jobId: first.jobId,
      state: 'wait',
    });
    const again = entry('crm');
    expect(await ordering.enqueue(p0, { entry: again, orderingKey: 'v1', deduplication: dedup })).toEqual({
      jobId: first.jobId,
      state: 'duplicate',
    });
    expect(await line('crm', 'v1')).not.toContain(again.jobId);
    // BullMQ itself finds the key: an add without an orderingKey is deduplicated against the waiting job.
    expect(await redis.get(bullDeduplicationKey(p0, dedup.id))).toBe(first.jobId);
    const plain = await queues.partitions[0]!.queue.add(
      'crm',
      { params: {}, context: {} },
      {
        jobId: 'plain-1',
        deduplication: { id: dedup.id, ttl: 60_000 },
      },
    );
    expect(plain.id).toBe(first.jobId);
  });

  it('keeps a job delay counted from enqueue', () => {
    const e = entry('crm', { enqueuedAt: 10_000, delayMs: 5000 });
    expect(queueJob(e, 12_000).opts.delay).toBe(5000);
    expect(queueJob(e, 12_000).opts.timestamp).toBe(10_000);
    expect(queueJob(e, 15_000).opts.delay).toBeUndefined();
  });

  it('lives in the partition it is given: the second partition has lines of its own', async () => {
    const p1 = keys.partitions[1] as PartitionKeys;
    const e = entry('crm');
    const r = await ordering.enqueue(p1, { entry: e, orderingKey: 'w1' });
    expect(r.state).toBe('go');
    await ordering.moveIn(p1, e);
    expect(await redis.exists(p1.jobKey(e.jobId))).toBe(1);
    expect(await redis.exists(p0.orderingLine('crm', 'w1'))).toBe(0);
    expect((await ordering.waiting(e.jobId))?.partition.index).toBe(1);
  });

  it('counts the jobs waiting behind an earlier job of their key, for the stats and the gauge', async () => {
    const outcomes = createOutcomeWriter(redis, 1000, { ordering, now: () => clock });
    const before = await countWaitingInLine(redis, p0);
    const a = [entry('crm'), entry('crm'), entry('crm')];
    // The first is marked due until the sweep finds it queued: on its way in, not waiting in line.
    for (const e of a) await enqueue(e, 'n1');
    expect(await countWaitingInLine(redis, p0)).toBe(before + 2);
    expect((await getStats(queues, redis)).waitingInLine).toBe(before + 2);
    expect(await outcomes.finish(p0, outcome(a[0]!, 'n1'))).toBe(true);
    expect(await countWaitingInLine(redis, p0)).toBe(before + 1);
    expect((await getStats(queues, redis)).partitions[0]?.waitingInLine).toBe(before + 1);
  });
});
