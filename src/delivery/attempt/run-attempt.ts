import { DelayedError, type Job } from 'bullmq';
import type { JobOutcome } from '../../queue/job-schema.js';
import type { PartitionKeys } from '../../redis/redis-connection.js';
import { coerceError } from '../../errors/errors.js';
import { redisRefusal } from '../../redis/redis-refusal.js';
import { startAttempt, type Attempt, type PipelineContext } from './attempt.js';
import { classify } from './classify.js';
import { alreadyEnded, finishDelivered, finishFailed } from './finish.js';
import { passGates } from './gates.js';
import { load } from './load.js';
import { prepare } from './prepare.js';
import { releasePermit, send } from './send.js';

/**
 * One attempt at delivering a job, as a list of named steps. A deferral (DelayedError) goes back
 * to BullMQ untouched, and so does Redis refusing a delivered job's outcome (see `unwritten`);
 * any other failure becomes a queue outcome in `finishFailed`.
 */
export async function runAttempt(ctx: PipelineContext, job: Job, partition: PartitionKeys, token?: string): Promise<JobOutcome> {
  const attempt = startAttempt(ctx, job, partition, token);
  // Set once the third party has taken the request and its answer is classified as delivered.
  let delivered = false;
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
    delivered = true;
    return await finishDelivered(ctx, loaded, res.status, response);
  } catch (caught: unknown) {
    if (caught instanceof DelayedError) throw caught;
    if (delivered && redisRefusal(caught) !== undefined) throw unwritten(ctx, attempt, caught);
    return await finishFailed(ctx, attempt, caught);
  } finally {
    // After the outcome, and any pause a Retry-After set, are written.
    if (attempt.permit) await releasePermit(ctx, attempt);
    ctx.events.emit('settled', { jobId: attempt.jobId });
  }
}

/**
 * Redis refused the write of a delivered outcome (a failover's READONLY, out of memory, or
 * unreachable). The job must not end dead for a state of Redis, as `finishFailed` would end it on
 * its last attempt: the error goes to BullMQ as it is, which runs the job again a second later;
 * that run sends again, under the same Idempotency-Key, and writes the outcome.
 */
function unwritten(ctx: PipelineContext, attempt: Attempt, caught: unknown): Error {
  const err = coerceError(caught);
  attempt.log().warn({ err: ctx.redact(err.message) }, 'delivered, but Redis refused its outcome: the job runs again');
  return err;
}
