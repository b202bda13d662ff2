import { ENDED_STATE, endedOutcome } from './bullmq-internals.js';
import type { RedisClient } from '../redis/redis-connection.js';
import type { DeadLetterRecord } from './outcome-writer.js';
import type { DeliveryQueues } from './delivery-queue.js';
import type { LineEntry } from './ordering.js';

export type PublicJobState = 'waiting' | 'delayed' | 'active' | 'delivered' | 'dead';

export interface JobStatus {
  jobId: string;
  actionId: string;
  state: PublicJobState;
  attempts: number;
  result?: { status: number | null; response: Record<string, unknown> };
  /** `errorResponse`: a dead job's captured errorResponse fields (`{}` when none). */
  error?: { reason: string; status: number | null; message: string; errorResponse?: Record<string, unknown> };
}

/** Reads a job's public state: from its partition's queue while it lives there, else from the dead letters. */
export async function getJobStatus(queues: DeliveryQueues, redis: RedisClient, jobId: string): Promise<JobStatus | null> {
  const found = await queues.findJob(jobId);
  if (found) {
    const { job } = found;
    const bullState = await job.getState();
    const base = { jobId, actionId: job.name };
    if (bullState === ENDED_STATE) {
      const out = endedOutcome(job);
      if (out?.outcome === 'delivered') {
        return { ...base, state: 'delivered', attempts: out.attempts, result: { status: out.status, response: out.response ?? {} } };
      }
      return {
        ...base,
        state: 'dead',
        attempts: out?.attempts ?? job.attemptsMade,
        error: {
          reason: out?.reason ?? 'unknown',
          status: out?.status ?? null,
          message: out?.error ?? '',
          errorResponse: out?.errorResponse ?? {},
        },
      };
    }
    if (bullState === 'failed') {
      return { ...base, state: 'dead', attempts: job.attemptsMade, error: { reason: 'network', status: null, message: job.failedReason } };
    }
    const state: PublicJobState = bullState === 'active' ? 'active' : bullState === 'delayed' ? 'delayed' : 'waiting';
    const status: JobStatus = { ...base, state, attempts: job.attemptsMade };
    if (job.failedReason) status.error = { reason: 'retrying', status: null, message: job.failedReason };
    return status;
  }
  const records = await Promise.all(queues.partitions.map((p) => redis.hget(p.keys.dlqRecords, jobId)));
  const raw = records.find((r) => r !== null);
  if (!raw) return waitingInLine(queues, redis, jobId);
  const rec = JSON.parse(raw) as DeadLetterRecord;
  const last = rec.attempts.at(-1);
  return {
    jobId,
    actionId: rec.actionId,
    state: 'dead',
    attempts: rec.attempts.length,
    error: {
      reason: rec.reason,
      status: rec.status,
      message: last?.error?.message ?? (rec.status ? `HTTP ${rec.status}` : rec.reason),
      errorResponse: rec.errorResponse ?? {},
    },
  };
}

/** A job with an orderingKey behind others of its line is not in the queue yet: it waits. */
async function waitingInLine(queues: DeliveryQueues, redis: RedisClient, jobId: string): Promise<JobStatus | null> {
  const entries = await Promise.all(queues.partitions.map((p) => redis.hget(p.keys.orderingJobs, jobId)));
  const raw = entries.find((r) => r !== null);
  if (!raw) return null;
  return { jobId, actionId: (JSON.parse(raw) as LineEntry).name, state: 'waiting', attempts: 0 };
}
