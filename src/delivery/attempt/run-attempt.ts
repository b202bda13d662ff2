import { DelayedError, type Job } from 'bullmq';
import type { JobOutcome } from '../../queue/job-schema.js';
import type { PartitionKeys } from '../../redis/redis-connection.js';
import { startAttempt, type PipelineContext } from './attempt.js';
import { classify } from './classify.js';
import { alreadyEnded, finishDelivered, finishFailed } from './finish.js';
import { passGates } from './gates.js';
import { load } from './load.js';
import { prepare } from './prepare.js';
import { releasePermit, send } from './send.js';

/**
 * One attempt at delivering a job, as a list of named steps. A deferral (DelayedError) goes back
 * to BullMQ untouched; any other failure becomes a queue outcome in `finishFailed`.
 */
export async function runAttempt(ctx: PipelineContext, job: Job, partition: PartitionKeys, token?: string): Promise<JobOutcome> {
  const attempt = startAttempt(ctx, job, partition, token);
  ctx.events.emit('started', { jobId: attempt.jobId });
  try {
    // Taken before (a retry, a deferral, or a run whose lock lapsed): it may have ended meanwhile,
    // its end written by the run that lost the lock. Then nothing is sent again and BullMQ completes
    // it with that end. A first run cannot have ended: it costs no read.
    if (job.attemptsStarted > 1) {
      const ended = await ctx.outcomes.endedAs(partition, attempt.jobId);
      if (ended) return alreadyEnded(attempt, ended);
    }
    // Steps with nothing to wait for return no promise: awaited only when they do.
    const pending = load(ctx, attempt);
    const loaded = pending instanceof Promise ? await pending : pending;
    const gated = passGates(ctx, loaded);
    if (gated) await gated;
    const prepared = prepare(ctx, loaded);
    if (prepared) await prepared;
    const res = await send(ctx, loaded);
    const response = classify(loaded.action, res, ctx.now(), ctx.maxResponseBytes);
    return await finishDelivered(ctx, loaded, res.status, response);
  } catch (caught: unknown) {
    if (caught instanceof DelayedError) throw caught;
    return await finishFailed(ctx, attempt, caught);
  } finally {
    // After the outcome, and any pause a Retry-After set, are written.
    if (attempt.permit) await releasePermit(ctx, attempt);
    ctx.events.emit('settled', { jobId: attempt.jobId });
  }
}
