import type { JobOutcome } from './job-schema.js';
import type { PartitionKeys, RedisClient } from '../redis/redis-connection.js';
import type { AttemptRecord, DeadLetterRecord } from './outcome-writer.js';
import type { DeliveryQueues } from './delivery-queue.js';
import { luaScript } from '../redis/lua-script.js';
import { ENDED_STATE, JOB_FIELDS } from './bullmq-internals.js';
import { decodeEntry } from './ordering.js';

export type PublicJobState = 'waiting' | 'delayed' | 'active' | 'delivered' | 'dead';

export interface JobStatus {
  jobId: string;
  actionId: string;
  state: PublicJobState;
  attempts: number;
  result?: { status: number | null; response: Record<string, unknown> };
  /** `errorResponse`: a dead job's captured errorResponse fields (`{}` when none). */
  error?: { reason: string; status: number | null; message: string; errorResponse?: Record<string, unknown> };
  /** Set on a dead job that was replayed: the id of the new job. */
  replayedAs?: string;
}

/** What a replay leaves behind for the dead job's id (`PartitionKeys.replayedAs`). */
export interface ReplayPointer {
  /** The new job's id. */
  jobId: string;
  actionId: string;
  attempts: number;
  reason: string;
  status: number | null;
  message: string;
  /** The dead job's captured errorResponse fields; absent from pointers written before it was kept. */
  errorResponse?: Record<string, unknown>;
}

/**
 * BullMQ's message for a job moved to its failed set after stalling more than maxStalledCount
 * times (bullmq 5, moveStalledJobsToWait): the one failure that no attempt of ours explains.
 */
const STALLED_MESSAGE = 'job stalled more than allowable limit';

/** `arAttempt:` of `arAttempt:<n>`: the script appends the attempt count it reads. */
const ATTEMPT_FIELD_PREFIX = JOB_FIELDS.attempt(0).slice(0, -1);

/*
 * Reads everything a job's status is made of in one step, so that no finish in flight (our results
 * script, then BullMQ's completion) can be seen half done. The state tests follow BullMQ's own
 * getState script (bullmq 5, getStateV2-8.lua; the rest of what we rely on inside BullMQ is in
 * bullmq-internals.ts); every key shares the partition's hash tag.
 * KEYS[1] job hash, KEYS[2] completed, KEYS[3] failed, KEYS[4] delayed, KEYS[5] prioritized,
 *   KEYS[6] active, KEYS[7] wait, KEYS[8] paused, KEYS[9] waiting-children, KEYS[10] dlq records,
 *   KEYS[11] the job's replay pointer
 * ARGV[1] job id
 * Returns {} when the partition knows nothing of the job, else
 *   { state, name, attemptsMade, returnvalue, failedReason, lastAttempt, dlqRecord, replayPointer }
 *   with false (nil) for what is absent; state is 'gone' when only the dead letter or the pointer is left.
 */
const READ_STATUS = luaScript(`
local id = ARGV[1]
local rcall = redis.call
local rec = rcall('HGET', KEYS[10], id)
local pointer = rcall('GET', KEYS[11])
if rcall('EXISTS', KEYS[1]) == 0 then
  if not rec and not pointer then return {} end
  return { 'gone', false, '0', false, false, false, rec, pointer }
end
local state = 'unknown'
if rcall('ZSCORE', KEYS[2], id) then state = 'completed'
elseif rcall('ZSCORE', KEYS[3], id) then state = 'failed'
elseif rcall('ZSCORE', KEYS[4], id) then state = 'delayed'
elseif rcall('ZSCORE', KEYS[5], id) then state = 'waiting'
elseif rcall('LPOS', KEYS[6], id) then state = 'active'
elseif rcall('LPOS', KEYS[7], id) then state = 'waiting'
elseif rcall('LPOS', KEYS[8], id) then state = 'waiting'
elseif rcall('ZSCORE', KEYS[9], id) then state = 'waiting'
end
local f = rcall('HMGET', KEYS[1], 'name', 'atm', 'returnvalue', 'failedReason')
local last = false
if state ~= 'completed' and f[2] then last = rcall('HGET', KEYS[1], '${ATTEMPT_FIELD_PREFIX}' .. f[2]) end
return { state, f[1], f[2] or '0', f[3], f[4], last, rec, pointer }
`);

type RawStatus = [
  state: string,
  name: string | null,
  attemptsMade: string,
  returnvalue: string | null,
  failedReason: string | null,
  lastAttempt: string | null,
  dlqRecord: string | null,
  replayPointer: string | null,
];

/** The typed call of READ_STATUS for one partition: null when the partition knows nothing of the job. */
async function readStatus(redis: RedisClient, keys: PartitionKeys, jobId: string): Promise<RawStatus | null> {
  const q = (suffix: string) => `${keys.bullPrefix}:${keys.queueName}:${suffix}`;
  const raw = (await READ_STATUS.run(
    redis,
    11,
    keys.jobKey(jobId),
    q('completed'),
    q('failed'),
    q('delayed'),
    q('prioritized'),
    q('active'),
    q('wait'),
    q('paused'),
    q('waiting-children'),
    keys.dlqRecords,
    keys.replayedAs(jobId),
    jobId,
  )) as RawStatus | [];
  return raw.length === 0 ? null : (raw as RawStatus);
}

function parseJson<T>(raw: string | null): T | null {
  if (raw === null) return null;
  try {
    return JSON.parse(raw) as T;
  } catch {
    return null;
  }
}

function isOutcome(v: unknown): v is JobOutcome {
  const o = v as JobOutcome | null;
  return typeof o === 'object' && o !== null && (o.outcome === 'delivered' || o.outcome === 'dead') && typeof o.attempts === 'number';
}

/** What a failed attempt's record says went wrong: the HTTP status, or the error's own code. */
function attemptError(rec: AttemptRecord | null): { reason: string; status: number | null; message: string } | null {
  if (!rec) return null;
  if (rec.response) return { reason: 'http_status', status: rec.response.status, message: `HTTP ${rec.response.status}` };
  if (rec.error) return { reason: rec.error.code, status: null, message: rec.error.message };
  return null;
}

function fromDeadLetter(jobId: string, rec: DeadLetterRecord): JobStatus {
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

/** Turns one consistent read into the public status; a finish in flight reads as the state before it. */
function toJobStatus(jobId: string, raw: RawStatus): JobStatus | null {
  const [state, name, atm, returnvalue, failedReason, lastAttempt, dlqRecord, replayPointer] = raw;
  const rec = parseJson<DeadLetterRecord>(dlqRecord);
  const pointer = parseJson<ReplayPointer>(replayPointer);
  const replayed = (s: JobStatus): JobStatus => (pointer && s.state === 'dead' ? { ...s, replayedAs: pointer.jobId } : s);
  const attemptsMade = Number(atm) || 0;

  if (state === 'gone') {
    if (rec) return replayed(fromDeadLetter(jobId, rec));
    if (!pointer) return null;
    const { actionId, attempts, reason, status, message, errorResponse } = pointer;
    return replayed({ jobId, actionId, state: 'dead', attempts, error: { reason, status, message, errorResponse: errorResponse ?? {} } });
  }
  const base = { jobId, actionId: name ?? rec?.actionId ?? '' };

  if (state === ENDED_STATE) {
    const out = parseJson<unknown>(returnvalue);
    if (isOutcome(out)) {
      if (out.outcome === 'delivered') {
        return { ...base, state: 'delivered', attempts: out.attempts, result: { status: out.status, response: out.response ?? {} } };
      }
      return replayed({
        ...base,
        state: 'dead',
        attempts: out.attempts,
        error: {
          reason: out.reason ?? rec?.reason ?? 'unknown',
          status: out.status,
          message: out.error ?? '',
          errorResponse: out.errorResponse ?? rec?.errorResponse ?? {},
        },
      });
    }
    // Completed without our outcome: not a job this relay finished; only a dead letter can say more.
    if (rec) return replayed(fromDeadLetter(jobId, rec));
    return { ...base, state: 'active', attempts: attemptsMade };
  }

  if (state === 'failed') {
    // A dead letter written for it (the stalled sweeper) is the authority; else BullMQ's own reason.
    if (rec) return replayed(fromDeadLetter(jobId, rec));
    const message = failedReason ?? '';
    const error = message.includes(STALLED_MESSAGE)
      ? { reason: 'stalled', status: null, message }
      : { ...(attemptError(parseJson<AttemptRecord>(lastAttempt)) ?? { reason: 'unknown', status: null }), message };
    return replayed({ ...base, state: 'dead', attempts: attemptsMade, error });
  }

  // Not ended in BullMQ's eyes: whatever our finish script already wrote is reported once BullMQ completes it.
  const publicState: PublicJobState = state === 'active' ? 'active' : state === 'delayed' ? 'delayed' : 'waiting';
  const status: JobStatus = { ...base, state: publicState, attempts: attemptsMade };
  const last = attemptError(parseJson<AttemptRecord>(lastAttempt));
  if (failedReason || last)
    status.error = { reason: 'retrying', status: last?.status ?? null, message: failedReason ?? last?.message ?? '' };
  return status;
}

/**
 * Reads a job's public state in one atomic read per partition (all in parallel): its fields, its
 * BullMQ state, its dead letter and its replay pointer together.
 */
export async function getJobStatus(queues: DeliveryQueues, redis: RedisClient, jobId: string): Promise<JobStatus | null> {
  const reads = await Promise.all(queues.partitions.map((p) => readStatus(redis, p.keys, jobId)));
  // A job lives in one partition; should two know it, the one still holding the job wins.
  const found = reads.find((r) => r !== null && r[0] !== 'gone') ?? reads.find((r) => r !== null);
  return found ? toJobStatus(jobId, found) : waitingInLine(queues, redis, jobId);
}

/** A job with an orderingKey behind others of its line is not in the queue yet: it waits. */
async function waitingInLine(queues: DeliveryQueues, redis: RedisClient, jobId: string): Promise<JobStatus | null> {
  const entries = await Promise.all(queues.partitions.map((p) => redis.hget(p.keys.orderingJobs, jobId)));
  const raw = entries.find((r) => r !== null);
  if (!raw) return null;
  return { jobId, actionId: decodeEntry(raw).name, state: 'waiting', attempts: 0 };
}
