import { UnrecoverableError, Worker } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { getJobStatus } from '../../src/queue/job-status.js';
import { createStalledSweeper } from '../../src/queue/stalled-sweeper.js';
import type { QueuePartition } from '../../src/queue/delivery-queue.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import { kill, readResults, setupRun, spawnWorker, trackRuns, waitFor } from '../support/harness.js';

const { children, cleanups } = trackRuns();

/** Ids in BullMQ's failed set that have no outcome of ours: must stay empty. */
async function failedWithoutOutcome(ctx: RelayContext): Promise<string[]> {
  const partition = ctx.queues.partitions[0] as QueuePartition;
  const ids = await ctx.redis.zrange(partition.queue.keys.failed as string, 0, -1);
  const marks = await Promise.all(ids.map((id) => ctx.redis.hget(partition.keys.jobKey(id), 'arOutcome')));
  return ids.filter((_, i) => marks[i] === null);
}

describe('a job that stalls more than JOB_MAX_STALLS times', () => {
  it('is dead-lettered with reason stalled and gets its results entry', async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    // The third party never answers: the worker holding the jobs is killed mid-request.
    receiver.handler = () => undefined;
    await ctx.store.put({ id: 'hang', name: 'hang', endpoint: { url: receiver.url, path: '/h', method: 'POST' }, body: { a: 1 } });
    const jobs = [0, 1, 2].map((i) => ({
      actionId: 'hang',
      params: {},
      context: { journeyId: 'j1', profileId: `p${i}` },
      idempotencyKey: `s-${i}`,
    }));
    const ids = (await ctx.producer.enqueueMany(jobs)).map((r) => ('jobId' in r ? r.jobId : ''));
    const env = { JOB_LOCK_MS: '2000', JOB_MAX_STALLS: '0', REQUEST_TIMEOUT_CAP_MS: '60000' };

    const victim = spawnWorker(config, children, env);
    await waitFor(() => receiver.requests.length >= 3, 30_000, 'three requests in flight');
    await kill(victim, 'SIGKILL');
    // The next worker finds the jobs stalled once (more than the 0 allowed): BullMQ fails them.
    spawnWorker(config, children, env);
    const results = await waitFor(
      async () => {
        const all = await readResults(ctx);
        return all.length >= 3 ? all : undefined;
      },
      30_000,
      'three results entries',
    );
    expect(results.map((r) => r.jobId).sort()).toEqual([...ids].sort());
    for (const r of results) {
      expect(r).toMatchObject({ outcome: 'dead', reason: 'stalled', status: '', actionId: 'hang' });
      expect(JSON.parse(r.context ?? '')).toMatchObject({ journeyId: 'j1' });
    }
    // No second request: the stalled jobs are not run again.
    expect(receiver.requests).toHaveLength(3);

    const rec = await ctx.deadLetters.get(ids[0] as string);
    expect(rec).toMatchObject({ reason: 'stalled', status: null, job: { actionId: 'hang', idempotencyKey: 's-0' } });
    expect(rec?.attempts.at(-1)?.error).toEqual({ code: 'stalled', message: 'job stalled more than allowable limit' });
    expect((await ctx.deadLetters.list({ reason: 'stalled' }, 10)).items).toHaveLength(3);
    expect(await getJobStatus(ctx.queues, ctx.redis, ids[0] as string)).toMatchObject({ state: 'dead', error: { reason: 'stalled' } });
    expect(await failedWithoutOutcome(ctx)).toEqual([]);
  }, 60_000);

  it('is found by the sweep when no worker ended it (a crash right after BullMQ failed it)', async () => {
    const { receiver, ctx } = await setupRun(cleanups);
    await ctx.store.put({ id: 'swept', name: 'swept', endpoint: { url: receiver.url, method: 'POST' }, body: { a: 1 } });
    const { jobId } = await ctx.producer.enqueue({ actionId: 'swept', params: {}, context: { journeyId: 'j2' } });
    const partition = ctx.queues.partitions[0] as QueuePartition;
    // BullMQ failing the job by itself, with no listener of ours attached.
    const bare = new Worker(
      partition.keys.queueName,
      () => {
        throw new UnrecoverableError('job stalled more than allowable limit');
      },
      { connection: ctx.bullConnection, prefix: partition.keys.bullPrefix },
    );
    await waitFor(async () => (await failedWithoutOutcome(ctx)).includes(jobId), 10_000, 'the job in the failed set');
    await bare.close();

    const sweeper = createStalledSweeper({
      queues: ctx.queues,
      redis: ctx.redis,
      outcomes: ctx.outcomes,
      metrics: ctx.metrics,
      logger: ctx.logger,
    });
    expect(await sweeper.sweep()).toBe(1);
    expect(await failedWithoutOutcome(ctx)).toEqual([]);
    // Once only: the next sweep finds nothing to end, and the results stream has one entry.
    expect(await sweeper.sweep()).toBe(0);
    const results = (await readResults(ctx)).filter((r) => r.jobId === jobId);
    expect(results).toHaveLength(1);
    expect(results[0]).toMatchObject({ outcome: 'dead', reason: 'stalled' });
    expect(await ctx.metrics.registry.getSingleMetricAsString('action_relay_jobs_total')).toContain('action="swept",outcome="dead"} 1');
  });
});
