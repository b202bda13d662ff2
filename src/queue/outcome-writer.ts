import type { PartitionKeys, RedisClient } from '../redis/redis-connection.js';
import type { DeadReason } from '../errors/errors.js';
import { luaScript, type LuaScript } from '../redis/lua-script.js';
import { RELEASE_LUA, decodeEntry, type LineEntry, type Ordering } from './ordering.js';
import { JOB_FIELDS } from './bullmq-internals.js';
import type { JobOutcome } from './job-schema.js';

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
 * The entry's idempotencyKey (the job id when none was given) and replayOf come from A[13] and
 * A[14] when the caller gives the key, else both from the job's stored data.
 * finishJob(K, A), K its keys and A its arguments (FINISH_SCRIPT's KEYS and ARGV):
 * K[1] job hash, K[2] results stream, K[3] dlq index (zset), K[4] dlq records (hash),
 *   K[5] outcome counts (hash), K[6] this minute's activity counters (hash),
 *   K[7..9] for an ordered job only: its line, the line entries, the due marks
 * A[1] outcome, A[2] stream maxlen, A[3..10] jobId actionId status reason attempts
 *   durationMs context response, A[11] failedAt ms, A[12] dead-letter record JSON,
 *   A[13] idempotency key or '', A[14] replayOf or '', A[15] activity counters' lifetime in seconds,
 *   A[16] errorResponse JSON, A[17] now ms,
 *   A[18..19] for an ordered job, when the caller adds next jobs: the queue's key prefix and its
 *   stored options template (Ordering.handoffArgs), with which the next job of the line is added here
 * Returns 0 when the job had already ended, else 1, or { 1, next job id, its entry } when an
 * ordered job's successor is due.
 */
/** How long a minute's activity counters are kept: the console reads the last hour. */
export const ACTIVITY_TTL_SECONDS = 2 * 3600;

const FINISH_LUA = `${RELEASE_LUA}
-- Whether the job may end now: 0 it had ended already, 1 yes and its hash is held (to be marked),
-- 2 yes and its hash is gone. Read before any write: a write that fails (a full Redis) leaves
-- nothing half done, no job marked ended without its results entry.
local function ending(jobKey)
  if redis.call('EXISTS', jobKey) == 0 then return 2 end
  if redis.call('HEXISTS', jobKey, '${JOB_FIELDS.outcome}') == 1 then return 0 end
  return 1
end
-- The job's entry on the results stream; replayOf only when it has one.
local function appendResult(stream, maxLen, jobId, actionId, outcome, status, reason, attempts, duration, context,
    response, errorResponse, idem, replayOf)
  local fields = { 'jobId', jobId, 'actionId', actionId, 'outcome', outcome, 'status', status, 'reason', reason,
    'attempts', attempts, 'durationMs', duration, 'context', context, 'response', response, 'errorResponse', errorResponse,
    'idempotencyKey', idem }
  if replayOf ~= '' then
    fields[#fields + 1] = 'replayOf'
    fields[#fields + 1] = replayOf
  end
  redis.call('XADD', stream, 'MAXLEN', '~', maxLen, '*', unpack(fields))
end
-- n jobs of one action that ended now, with their retries: the totals, and the per-minute counts
-- for the console (O(1) writes here instead of a scan of the stream per read).
local function count(countsKey, activityKey, ttl, outcome, actionId, n, retries)
  redis.call('HINCRBY', countsKey, outcome, n)
  redis.call('HINCRBY', activityKey, actionId .. (outcome == 'dead' and '|x' or '|d'), n)
  if retries > 0 then redis.call('HINCRBY', activityKey, actionId .. '|r', retries) end
  redis.call('EXPIRE', activityKey, ttl)
end
local function finishJob(K, A)
  local e = ending(K[1])
  if e == 0 then return 0 end
  local idem, replayOf = A[13], A[14]
  if idem == '' then
    idem = A[3]
    local data = redis.call('HGET', K[1], 'data')
    if data then
      local ok, d = pcall(cjson.decode, data)
      if ok and type(d) == 'table' then
        if type(d.idempotencyKey) == 'string' then idem = d.idempotencyKey end
        if replayOf == '' and type(d.replayOf) == 'string' then replayOf = d.replayOf end
      end
    end
  end
  appendResult(K[2], A[2], A[3], A[4], A[1], A[5], A[6], A[7], A[8], A[9], A[10], A[16], idem, replayOf)
  if e == 1 then redis.call('HSET', K[1], '${JOB_FIELDS.outcome}', A[1]) end
  if A[1] == 'dead' then
    redis.call('ZADD', K[3], A[11], A[3])
    redis.call('HSET', K[4], A[3], A[12])
  end
  count(K[5], K[6], A[15], A[1], A[4], 1, tonumber(A[7]) - 1)
  if K[7] then
    local nextJob = releaseLine(K[7], K[8], K[9], A[3], A[17], A[18], A[19])
    if nextJob then return { 1, nextJob[1], nextJob[2] } end
  end
  return 1
end
`;

const FINISH_SCRIPT = luaScript(`${FINISH_LUA}
return finishJob(KEYS, ARGV)`);

/*
 * The same for the common case, a delivered job with no orderingKey, for every such job that ends
 * in one event-loop turn, in one command (FinishBatcher below). Each command costs the worker far
 * more than its arguments do (ioredis's Command, its reply and promise): one per turn instead of
 * one per delivery is several microseconds per delivery at saturation. What that case leaves empty
 * or constant is written into the script (the stream's maxlen too: one script per writer); the
 * three numbers travel as one argument. Each job ends by the same steps as finishJob (ending,
 * appendResult): a job that had already ended gets 0, one that ended now 1, one whose writes failed
 * the error's message (the others of its command are not held back by it), in order. The counts
 * of the jobs that ended now are written once per action after them, not per job (three writes
 * fewer per job: the script's cost in Redis, 16 against 10 us per job at 8 per command); should
 * an action's counts fail, its jobs that ended now get that error, as each would have alone (their
 * entries stand: run again, they find themselves ended).
 * A refusal of Redis's own (a replica mid-failover, a full Redis, too few replicas, a failing disk)
 * is the whole command's error instead: Redis refuses the first write of a command, so none of its
 * jobs had written, and the client must see it as the command's answer (READONLY makes it reconnect
 * and send it again).
 * KEYS[1] results stream, KEYS[2] outcome counts, KEYS[3] this minute's activity counters,
 *   KEYS[3 + i] job i's hash
 * ARGV, FINISH_BATCH_STRIDE per job: jobId, actionId, 'status attempts durationMs', context,
 *   response, idempotency key ('': the job id), replayOf ('': none)
 */
const FINISH_BATCH_STRIDE = 7;

function finishDeliveredScript(maxLen: number) {
  return luaScript(`${FINISH_LUA}
local REFUSED = { READONLY = true, OOM = true, NOREPLICAS = true, MISCONF = true }
-- Job i, its arguments from ARGV[a + 1]: 1 and its action and retries when it ended now, else 0.
local function finishDelivered(jobKey, a)
  local e = ending(jobKey)
  if e == 0 then return 0 end
  local status, attempts, duration = string.match(ARGV[a + 3], '^(%S+) (%S+) (%S+)$')
  local idem = ARGV[a + 6]
  if idem == '' then idem = ARGV[a + 1] end
  appendResult(KEYS[1], '${maxLen}', ARGV[a + 1], ARGV[a + 2], 'delivered', status, '', attempts, duration, ARGV[a + 4],
    ARGV[a + 5], '{}', idem, ARGV[a + 7])
  if e == 1 then redis.call('HSET', jobKey, '${JOB_FIELDS.outcome}', 'delivered') end
  return 1, ARGV[a + 2], math.max(tonumber(attempts) - 1, 0)
end
local function message(err)
  return type(err) == 'table' and err.err or tostring(err)
end
-- Per action, the jobs that ended now and their retries.
local out, byAction = {}, {}
for i = 1, #KEYS - 3 do
  local ok, written, actionId, retried = pcall(finishDelivered, KEYS[3 + i], (i - 1) * ${FINISH_BATCH_STRIDE})
  if ok then
    out[i] = written
    if written == 1 then
      local group = byAction[actionId]
      if not group then
        group = { jobs = {}, retries = 0 }
        byAction[actionId] = group
      end
      group.jobs[#group.jobs + 1] = i
      group.retries = group.retries + retried
    end
  else
    local err = message(written)
    -- Redis's own refusals come at the command's first write, before any job of it has written:
    -- the whole command fails, with the reply the client acts on (READONLY: reconnect, send again).
    if REFUSED[string.match(err, '^%-?(%u+)') or ''] then return redis.error_reply(err) end
    out[i] = err
  end
end
for actionId, group in pairs(byAction) do
  local ok, err = pcall(count, KEYS[2], KEYS[3], '${ACTIVITY_TTL_SECONDS}', 'delivered', actionId, #group.jobs, group.retries)
  if not ok then
    for _, i in ipairs(group.jobs) do out[i] = message(err) end
  end
end
return out`);
}

/** A job's own error, from inside a finish command that ran: as ioredis would have given it alone. */
class ReplyError extends Error {
  override name = 'ReplyError';
}

/** Most jobs one finish command carries: bounds how long Redis runs it (some 10-15 us per job). */
export const MAX_FINISH_BATCH = 128;

interface PendingFinish {
  jobKey: string;
  args: string[];
  resolve(written: boolean): void;
  reject(err: unknown): void;
}

/**
 * Gathers the delivered jobs that end in one event-loop turn, per connection and partition (one
 * slot of a Redis Cluster), and sends each group as one command when the turn ends (setImmediate:
 * the jobs whose answers came in the same socket reads end together). Each caller's promise
 * settles with its own job's answer; should Redis refuse the command, every job of it gets the
 * error, is not completed, and runs again, as it would have alone. Waiting for the end of the turn
 * costs no latency: the writes of a turn were already held until then (batchWrites).
 */
class FinishBatcher {
  private open = new Map<RedisClient, Map<PartitionKeys, PendingFinish[]>>();
  private scheduled = false;

  constructor(
    private readonly script: LuaScript,
    private readonly now: () => number,
  ) {}

  add(via: RedisClient, keys: PartitionKeys, job: PendingFinish): void {
    let byPartition = this.open.get(via);
    if (!byPartition) this.open.set(via, (byPartition = new Map()));
    let jobs = byPartition.get(keys);
    if (!jobs) byPartition.set(keys, (jobs = []));
    jobs.push(job);
    if (jobs.length >= MAX_FINISH_BATCH) {
      byPartition.delete(keys);
      this.send(via, keys, jobs);
    }
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.scheduled = false;
    const open = this.open;
    this.open = new Map();
    for (const [via, byPartition] of open) for (const [keys, jobs] of byPartition) this.send(via, keys, jobs);
  }

  /** Settles every job of the command, whatever happens: a job left waiting would hold its worker slot for good. */
  private send(via: RedisClient, keys: PartitionKeys, jobs: PendingFinish[]): void {
    const failAll = (err: unknown) => {
      for (const job of jobs) job.reject(err);
    };
    try {
      const keysAndArgs = [keys.results, keys.outcomeCounts, keys.activity(Math.floor(this.now() / 60_000))];
      for (const job of jobs) keysAndArgs.push(job.jobKey);
      for (const job of jobs) for (const arg of job.args) keysAndArgs.push(arg);
      this.script
        .run(via, jobs.length + 3, ...keysAndArgs)
        .then((written) => settle(jobs, written))
        .catch(failAll);
    } catch (err: unknown) {
      failAll(err);
    }
  }
}

/** Each job's own answer: 1 ended now, 0 had already ended, a string its error. Throws (every job fails) on a reply of another shape. */
function settle(jobs: PendingFinish[], written: unknown): void {
  if (!Array.isArray(written) || written.length !== jobs.length) {
    throw new ReplyError(`finish: expected ${jobs.length} answers, got ${JSON.stringify(written)?.slice(0, 200)}`);
  }
  jobs.forEach((job, i) => {
    const answer: unknown = written[i];
    if (answer === 1 || answer === 0) job.resolve(answer === 1);
    else job.reject(new ReplyError(typeof answer === 'string' ? answer : `finish: unexpected answer ${String(answer)}`));
  });
}

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
  /**
   * How a job that already ended ended, null when it has not: its dead letter's reason, status and
   * fields for a dead job; for a delivered one only that it was (the answer's status and captured
   * fields are on the results stream, which has no index by job).
   */
  endedAs(keys: PartitionKeys, jobId: string): Promise<JobOutcome | null>;
}

export interface OutcomeWriterOptions {
  /** Adds the next job of an ordered job's line to the queue (in the finish script, or after it); without it the ordering sweep does, later. */
  ordering?: Pick<Ordering, 'moveIn' | 'handoffArgs'>;
  /** Told when that add fails (the sweep adds the job later). */
  onHandoffError?: (err: unknown, next: LineEntry) => void;
  now?: () => number;
}

export function createOutcomeWriter(redis: RedisClient, maxLen: number, opts: OutcomeWriterOptions = {}): OutcomeWriter {
  const now = opts.now ?? Date.now;
  const maxLenArg = String(maxLen);
  const batcher = new FinishBatcher(finishDeliveredScript(maxLen), now);
  /** A delivered job with no orderingKey: joins the turn's finish command (it is every delivery's). */
  const finishShort = (keys: PartitionKeys, o: Outcome, idempotencyKey: string, via?: RedisClient): Promise<boolean> =>
    new Promise((resolve, reject) => {
      const args = [
        o.jobId,
        o.actionId,
        `${o.status} ${o.attempts} ${o.durationMs}`,
        JSON.stringify(o.context),
        JSON.stringify(o.response),
        idempotencyKey === o.jobId ? '' : idempotencyKey,
        o.replayOf ?? '',
      ];
      batcher.add(via ?? redis, keys, { jobKey: keys.jobKey(o.jobId), args, resolve, reject });
    });

  const finishAny = async (keys: PartitionKeys, o: Outcome, via?: RedisClient): Promise<boolean> => {
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
      maxLenArg,
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
  };

  return {
    finish(keys, o, via) {
      const idem = o.idempotencyKey;
      const short = o.outcome === 'delivered' && o.reason === '' && o.status !== null && o.orderingKey === undefined && !o.errorResponse;
      return short && idem !== undefined ? finishShort(keys, o, idem, via) : finishAny(keys, o, via);
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
    async endedAs(keys, jobId) {
      const outcome = await redis.hget(keys.jobKey(jobId), JOB_FIELDS.outcome);
      if (outcome === 'delivered') return { outcome, status: null, reason: null, attempts: 0, response: {} };
      if (outcome !== 'dead') return null;
      const raw = await redis.hget(keys.dlqRecords, jobId);
      const rec = raw === null ? null : (JSON.parse(raw) as DeadLetterRecord);
      return {
        outcome,
        status: rec?.status ?? null,
        reason: rec?.reason ?? 'unknown',
        attempts: rec?.attempts.length ?? 0,
        errorResponse: rec?.errorResponse ?? {},
        error: rec?.attempts.at(-1)?.error?.message ?? (rec?.status != null ? `HTTP ${rec.status}` : ''),
      };
    },
  };
}
