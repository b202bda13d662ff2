import type { PartitionKeys, RedisClient } from '../redis/redis-connection.js';
import type { DeadReason } from '../errors/errors.js';
import { luaScript } from '../redis/lua-script.js';
import { RELEASE_LUA, decodeEntry, type LineEntry, type Ordering } from './ordering.js';
import { JOB_FIELDS } from './bullmq-internals.js';

/** One attempt as the dead-letter record keeps it (secrets already redacted). */
export interface AttemptRecord {
  attempt: number;
  startedAt: string;
  durationMs: number;
  request: { method: string; url: string; headers: Record<string, string> };
  response?: { status: number; headers: Record<string, string | string[]>; body: string };
  error?: { code: string; message: string };
}

export interface DeadLetterRecord {
  jobId: string;
  actionId: string;
  job: {
    actionId: string;
    params: Record<string, unknown>;
    context: Record<string, unknown>;
    idempotencyKey?: string;
    enqueuedAt: string;
    replayOf?: string;
    orderingKey?: string;
  };
  reason: DeadReason;
  status: number | null;
  failedAt: string;
  /** The errorResponse fields captured from the last attempt's answer (absent in records written before they existed). */
  errorResponse?: Record<string, unknown>;
  attempts: AttemptRecord[];
}

export interface Outcome {
  jobId: string;
  actionId: string;
  outcome: 'delivered' | 'dead';
  status: number | null;
  reason: string;
  attempts: number;
  durationMs: number;
  context: Record<string, unknown>;
  response: Record<string, unknown>;
  /** A dead job's captured errorResponse fields. @defaultValue {} */
  errorResponse?: Record<string, unknown>;
  dead?: DeadLetterRecord;
  /** The job's idempotency key (its id when none was given); without it, both fields are read from the job's data. */
  idempotencyKey?: string;
  /** The dead letter a replayed job came from; taken only along with `idempotencyKey`. */
  replayOf?: string;
  /** The job's orderingKey: ending it lets the next job of its line go. */
  orderingKey?: string;
}

/*
 * Ends a job exactly once: marks its BullMQ hash, appends the results entry, counts the outcome
 * and, for a dead job, stores the dead-letter record, all in one step. A rerun after a crash finds
 * the mark. An ordered job also leaves its line here, and the next job of the line is added to the
 * queue (or, with a delay still to run, marked due; queue/ordering.ts), so that ending one and
 * releasing the other cannot be split by a crash.
 * Every key is the job's partition's (one hash tag), so this is one slot of a Redis Cluster.
 * The entry's idempotencyKey (the job id when none was given) and replayOf come from ARGV[13] and
 * ARGV[14] when the caller gives the key, else both from the job's stored data.
 * KEYS[1] job hash, KEYS[2] results stream, KEYS[3] dlq index (zset), KEYS[4] dlq records (hash),
 *   KEYS[5] outcome counts (hash), KEYS[6] this minute's activity counters (hash),
 *   KEYS[7..9] for an ordered job only: its line, the line entries, the due marks
 * ARGV[1] outcome, ARGV[2] stream maxlen, ARGV[3..10] jobId actionId status reason attempts
 *   durationMs context response, ARGV[11] failedAt ms, ARGV[12] dead-letter record JSON,
 *   ARGV[13] idempotency key or '', ARGV[14] replayOf or '', ARGV[15] activity counters' lifetime in seconds,
 *   ARGV[16] errorResponse JSON, ARGV[17] now ms,
 *   ARGV[18..19] for an ordered job, when the caller adds next jobs: the queue's key prefix and its
 *   stored options template (Ordering.handoffArgs), with which the next job of the line is added here
 * Returns 0 when the job had already ended, else 1, or { 1, next job id, its entry } when an
 * ordered job's successor is due.
 */
const FINISH_SCRIPT = luaScript(`${RELEASE_LUA}
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HSETNX', KEYS[1], '${JOB_FIELDS.outcome}', ARGV[1]) == 0 then return 0 end
end
local idem, replayOf = ARGV[13], ARGV[14]
if idem == '' then
  idem = ARGV[3]
  local data = redis.call('HGET', KEYS[1], 'data')
  if data then
    local ok, d = pcall(cjson.decode, data)
    if ok and type(d) == 'table' then
      if type(d.idempotencyKey) == 'string' then idem = d.idempotencyKey end
      if replayOf == '' and type(d.replayOf) == 'string' then replayOf = d.replayOf end
    end
  end
end
local fields = { 'jobId', ARGV[3], 'actionId', ARGV[4], 'outcome', ARGV[1], 'status', ARGV[5], 'reason', ARGV[6],
  'attempts', ARGV[7], 'durationMs', ARGV[8], 'context', ARGV[9], 'response', ARGV[10], 'errorResponse', ARGV[16],
  'idempotencyKey', idem }
if replayOf ~= '' then
  fields[#fields + 1] = 'replayOf'
  fields[#fields + 1] = replayOf
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
redis.call('HINCRBY', KEYS[5], ARGV[1], 1)
if ARGV[1] == 'dead' then
  redis.call('ZADD', KEYS[3], ARGV[11], ARGV[3])
  redis.call('HSET', KEYS[4], ARGV[3], ARGV[12])
end
-- Per-minute counts for the console: two O(1) writes here instead of a scan of the stream per read.
redis.call('HINCRBY', KEYS[6], ARGV[4] .. (ARGV[1] == 'dead' and '|x' or '|d'), 1)
local retries = tonumber(ARGV[7]) - 1
if retries > 0 then redis.call('HINCRBY', KEYS[6], ARGV[4] .. '|r', retries) end
redis.call('EXPIRE', KEYS[6], ARGV[15])
if KEYS[7] then
  local nextJob = releaseLine(KEYS[7], KEYS[8], KEYS[9], ARGV[3], ARGV[17], ARGV[18], ARGV[19])
  if nextJob then return { 1, nextJob[1], nextJob[2] } end
end
return 1
`);

const attemptField = JOB_FIELDS.attempt;

/** Each call names the partition the job lives in: its results stream and dead letters are that partition's. */
export interface OutcomeWriter {
  /**
   * Writes the terminal outcome; false when the job had already ended (a rerun after a crash).
   * `via` sends it on another connection (the worker's BullMQ connection, so that it travels
   * ahead of BullMQ's own completion command, in order).
   */
  finish(keys: PartitionKeys, o: Outcome, via?: RedisClient): Promise<boolean>;
  /** Keeps a failed attempt's record on the job until it ends. */
  recordAttempt(keys: PartitionKeys, jobId: string, record: AttemptRecord): Promise<void>;
  /** The failed attempts recorded so far, in order. */
  attemptsOf(keys: PartitionKeys, jobId: string, count: number): Promise<AttemptRecord[]>;
}

/** How long a minute's activity counters are kept: the console reads the last hour. */
export const ACTIVITY_TTL_SECONDS = 2 * 3600;

export interface OutcomeWriterOptions {
  /** Adds the next job of an ordered job's line to the queue (in the finish script, or after it); without it the ordering sweep does, later. */
  ordering?: Pick<Ordering, 'moveIn' | 'handoffArgs'>;
  /** Told when that add fails (the sweep adds the job later). */
  onHandoffError?: (err: unknown, next: LineEntry) => void;
  now?: () => number;
}

export function createOutcomeWriter(redis: RedisClient, maxLen: number, opts: OutcomeWriterOptions = {}): OutcomeWriter {
  const now = opts.now ?? Date.now;
  return {
    async finish(keys, o, via) {
      const scriptKeys = [
        keys.jobKey(o.jobId),
        keys.results,
        keys.dlq,
        keys.dlqRecords,
        keys.outcomeCounts,
        keys.activity(Math.floor(now() / 60_000)),
      ];
      if (o.orderingKey !== undefined) scriptKeys.push(keys.orderingLine(o.actionId, o.orderingKey), keys.orderingJobs, keys.orderingDue);
      const written = (await FINISH_SCRIPT.run(
        via ?? redis,
        scriptKeys.length,
        ...scriptKeys,
        o.outcome,
        String(maxLen),
        o.jobId,
        o.actionId,
        o.status === null ? '' : String(o.status),
        o.reason,
        String(o.attempts),
        String(o.durationMs),
        JSON.stringify(o.context),
        JSON.stringify(o.response),
        o.dead ? String(Date.parse(o.dead.failedAt)) : '0',
        o.dead ? JSON.stringify(o.dead) : '',
        o.idempotencyKey ?? '',
        o.replayOf ?? '',
        String(ACTIVITY_TTL_SECONDS),
        JSON.stringify(o.errorResponse ?? {}),
        String(now()),
        ...(o.orderingKey !== undefined && opts.ordering ? opts.ordering.handoffArgs(keys) : []),
      )) as 0 | 1 | [1, string, string | null];
      if (Array.isArray(written)) {
        const [, , raw] = written;
        if (raw !== null && opts.ordering) {
          const next = decodeEntry(raw);
          await opts.ordering.moveIn(keys, next).catch((err: unknown) => opts.onHandoffError?.(err, next));
        }
        return true;
      }
      return written === 1;
    },
    async recordAttempt(keys, jobId, record) {
      await redis.hset(keys.jobKey(jobId), attemptField(record.attempt), JSON.stringify(record));
    },
    async attemptsOf(keys, jobId, count) {
      if (count <= 0) return [];
      const fields = Array.from({ length: count }, (_, i) => attemptField(i + 1));
      const raw = await redis.hmget(keys.jobKey(jobId), ...fields);
      return raw.flatMap((r) => (r === null ? [] : [JSON.parse(r) as AttemptRecord]));
    },
  };
}
