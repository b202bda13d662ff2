import type { JobsOptions } from 'bullmq';
import type { Logger } from 'pino';
import { coerceError } from '../errors/errors.js';
import { luaScript } from '../redis/lua-script.js';
import type { PartitionKeys, RedisClient } from '../redis/redis-connection.js';
import type { DeliveryQueues, QueuePartition } from './delivery-queue.js';
import type { JobData } from './job-schema.js';
import { ADD_PRIORITIZED_LUA, bullDeduplicationKey, storedOptionsTemplate } from './bullmq-internals.js';

/*
 * Per-key ordering. Jobs of one action with the same orderingKey form a line: a Redis list of job
 * ids in enqueue order, in the partition of the action (one hash tag, so every script here is one
 * slot of a Redis Cluster). Only the first job of a line is in the BullMQ queue; the others wait
 * outside it, their entry (what BullMQ needs to add them) in the partition's `orderingJobs` hash.
 * While the first one retries or is deferred it stays first, so the ones behind it wait, and
 * other lines are not held up. When it ends, delivered or dead, the finish script (outcome-writer)
 * takes it off its line and adds the next one to the BullMQ queue in the same atomic step
 * (RELEASE_LUA below, with bullmq-internals' ADD_PRIORITIZED_LUA): no round trip, nothing a crash
 * can split. A next job that cannot be added that way (a delay still to run) is marked due in
 * `orderingDue` instead and returned: the process that ended its predecessor adds it with BullMQ,
 * and should it crash first, the sweep does. The first job of a line is added by the producer
 * after the enqueue script marked it due, the sweep covering a crash in between. Adding is
 * idempotent: BullMQ keeps one job per id. Jobs without an orderingKey never touch any of this.
 */

/** What a job waiting in line keeps until it is added to the queue. */
export interface LineEntry {
  jobId: string;
  /** The action id (the BullMQ job name). */
  name: string;
  /** The job's data as BullMQ stores it (JSON). */
  data: string;
  priority: number;
  /** When it was enqueued: the BullMQ timestamp, so that latency counts the wait in line. */
  enqueuedAt: number;
  /** Not sent before enqueuedAt + delayMs. */
  delayMs?: number;
}

/*
 * An entry is stored as a JSON header (everything but the data), a newline, then the data as
 * BullMQ stores it: the finish script decodes only the short header and copies the data as it is
 * (JSON.stringify never writes a raw newline). Entries of older versions are one JSON object
 * holding the data; they are read all the same, and added by the process rather than the script.
 */
export function encodeEntry(entry: LineEntry): string {
  const { data, ...header } = entry;
  return `${JSON.stringify(header)}\n${data}`;
}

export function decodeEntry(raw: string): LineEntry {
  const cut = raw.indexOf('\n');
  if (cut >= 0) return { ...(JSON.parse(raw.slice(0, cut)) as Omit<LineEntry, 'data'>), data: raw.slice(cut + 1) };
  const old = JSON.parse(raw) as Omit<LineEntry, 'data'> & { data: JobData };
  return { ...old, data: JSON.stringify(old.data) };
}

/** How one ordered job was taken: first in line (to be added to the queue now), behind others, or a duplicate of `jobId`. */
export type LineState = 'go' | 'wait' | 'duplicate';

/*
 * KEYS[1] line (list), KEYS[2] entries (hash), KEYS[3] due (zset), KEYS[4] BullMQ deduplication
 *   key (only when the job has an idempotency key)
 * ARGV[1] job id, ARGV[2] entry JSON, ARGV[3] now ms, ARGV[4] deduplication TTL ms
 * Returns { jobId, state }: 'duplicate' with the id holding the deduplication key; 'go' when the
 * job is first in its line (marked due: the caller adds it to the queue); 'wait' otherwise.
 */
const ENQUEUE = luaScript(`
if KEYS[4] then
  local existing = redis.call('GET', KEYS[4])
  if existing then return { existing, 'duplicate' } end
  redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[4])
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if redis.call('RPUSH', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
  return { ARGV[1], 'go' }
end
return { ARGV[1], 'wait' }
`);

/**
 * A Lua function for the finish script: takes an ended job off its line and, when another waits
 * behind it, adds that one to the BullMQ queue (queueKey: the queue's key prefix, template: its
 * stored options template) and drops its entry. A next job with a delay still to run, or an entry of an older format, is marked due
 * instead and returned as { id, entry } for the caller to add (else nil). Run in the same script
 * that writes the outcome, so that a line is never left without its next job queued or due. A job
 * found elsewhere than first (which only a hand-edited queue can cause) is taken out all the same.
 * Arguments: line (list), entries (hash), due (zset) keys, the ended job's id, now ms, queueKey and
 * template (nil: mark the next one due, never add it here).
 */
export const RELEASE_LUA = `${ADD_PRIORITIZED_LUA}
local function releaseLine(line, entries, due, jobId, now, queueKey, template)
  redis.call('HDEL', entries, jobId)
  redis.call('ZREM', due, jobId)
  if redis.call('LINDEX', line, 0) ~= jobId then
    redis.call('LREM', line, 1, jobId)
    return nil
  end
  redis.call('LPOP', line)
  local nextId = redis.call('LINDEX', line, 0)
  if not nextId then return nil end
  local raw = redis.call('HGET', entries, nextId)
  local cut = raw and string.find(raw, '\\n', 1, true)
  if queueKey and cut then
    local ok, e = pcall(cjson.decode, string.sub(raw, 1, cut - 1))
    if ok and type(e) == 'table' and type(e.priority) == 'number' and e.priority > 0
      and (type(e.delayMs) ~= 'number' or e.enqueuedAt + e.delayMs <= tonumber(now)) then
      addPrioritizedJob(queueKey, nextId, e.name, string.sub(raw, cut + 1), template, e.enqueuedAt, e.priority)
      redis.call('HDEL', entries, nextId)
      return nil
    end
  end
  redis.call('ZADD', due, now, nextId)
  return { nextId, raw }
end
`;

/*
 * The sweep of one partition: each job marked due before ARGV[1] is either in the queue already
 * (its BullMQ hash exists: its mark and entry are dropped) or not yet (a crash between the mark and
 * the add: its entry is returned for the caller to add, and its mark moved to now so that another
 * sweeper waits a grace period before trying again). A mark without an entry is dropped.
 * KEYS[1] due (zset), KEYS[2] entries (hash)
 * ARGV[1] marked before (ms), ARGV[2] now ms, ARGV[3] most marks looked at, ARGV[4] job hash key prefix
 * Returns the entries (JSON) to add.
 */
const SWEEP = luaScript(`
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local entry = redis.call('HGET', KEYS[2], id)
  if entry and redis.call('EXISTS', ARGV[4] .. id) == 0 then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    out[#out + 1] = entry
  else
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
  end
end
return out
`);

/*
 * Jobs waiting in line behind an earlier job of their key: entries without a due mark (a job first
 * in its line, on its way into the queue or already there, has a mark until the sweep drops both;
 * one added by the finish script has neither). One atomic read, O(1).
 * KEYS[1] entries (hash), KEYS[2] due (zset). Returns the count.
 */
const IN_LINE = luaScript(`
local n = redis.call('HLEN', KEYS[1]) - redis.call('ZCARD', KEYS[2])
if n < 0 then return 0 end
return n
`);

/** How many jobs of the partition wait in line behind an earlier job of their key (not yet in the queue). */
export async function countWaitingInLine(redis: RedisClient, keys: PartitionKeys): Promise<number> {
  return (await IN_LINE.run(redis, 2, keys.orderingJobs, keys.orderingDue)) as number;
}

/** How long a due job may take to be added before the sweep adds it. */
export const HANDOFF_GRACE_MS = 5000;
/** Marks one sweep looks at per partition. */
const SWEEP_BATCH = 500;

export interface OrderedJob {
  entry: LineEntry;
  orderingKey: string;
  /** BullMQ's deduplication id and how long it holds, when the job has an idempotency key. */
  deduplication?: { id: string; ttlMs: number };
}

export interface Ordering {
  /** Puts a job at the end of its line. On 'go' the caller adds it to the queue (`queueJob`). */
  enqueue(partition: PartitionKeys, job: OrderedJob, now?: number): Promise<{ jobId: string; state: LineState }>;
  /** Adds a job whose turn has come to its partition's queue; a job already there is left as it is. */
  moveIn(partition: PartitionKeys, entry: LineEntry): Promise<void>;
  /** What the finish script needs to add the next job of a line itself: the queue's key prefix and its stored options template. */
  handoffArgs(partition: PartitionKeys): [queueKey: string, template: string];
  /** Adds the due jobs a crash left out of the queue; returns how many. */
  sweep(now?: number): Promise<number>;
  /** The entry of a job waiting in line (not yet in the queue), with the partition holding it. */
  waiting(jobId: string): Promise<{ entry: LineEntry; partition: PartitionKeys } | null>;
  /** Sweeps every `intervalMs` until `stop`. */
  start(intervalMs?: number): void;
  stop(): void;
}

/** The BullMQ add of a job whose turn has come. */
export function queueJob(entry: LineEntry, now: number): { name: string; data: JobData; opts: JobsOptions } {
  const opts: JobsOptions = { jobId: entry.jobId, priority: entry.priority, timestamp: entry.enqueuedAt };
  const data = JSON.parse(entry.data) as JobData;
  // BullMQ delays from `timestamp`: only a delay still to run is passed, else the job would take a trip through the delayed set.
  if (entry.delayMs && entry.enqueuedAt + entry.delayMs > now) opts.delay = entry.delayMs;
  return { name: entry.name, data, opts };
}

export interface OrderingDeps {
  redis: RedisClient;
  queues: DeliveryQueues;
  logger?: Logger;
  now?: () => number;
}

export function createOrdering(deps: OrderingDeps): Ordering {
  const { redis, queues } = deps;
  const clock = deps.now ?? Date.now;
  const partitionOf = (keys: PartitionKeys) => queues.partitions[keys.index] as QueuePartition;
  const templates = queues.partitions.map((p) => storedOptionsTemplate(p.queue));
  let timer: NodeJS.Timeout | undefined;

  const ordering: Ordering = {
    async enqueue(keys, job, now = clock()) {
      const scriptKeys = [keys.orderingLine(job.entry.name, job.orderingKey), keys.orderingJobs, keys.orderingDue];
      // A job waiting outside the queue holds its idempotency key where BullMQ looks for it, so
      // that a job enqueued twice is one job whichever path either took.
      if (job.deduplication) scriptKeys.push(bullDeduplicationKey(keys, job.deduplication.id));
      const [jobId, state] = (await ENQUEUE.run(
        redis,
        scriptKeys.length,
        ...scriptKeys,
        job.entry.jobId,
        encodeEntry(job.entry),
        now,
        job.deduplication?.ttlMs ?? 0,
      )) as [string, LineState];
      return { jobId, state };
    },
    async moveIn(keys, entry) {
      const { name, data, opts } = queueJob(entry, clock());
      await partitionOf(keys).queue.add(name, data, opts);
    },
    handoffArgs(keys) {
      return [keys.jobKey(''), templates[keys.index] as string];
    },
    async sweep(now = clock()) {
      let added = 0;
      for (const { keys } of queues.partitions) {
        const raw = (await SWEEP.run(
          redis,
          2,
          keys.orderingDue,
          keys.orderingJobs,
          now - HANDOFF_GRACE_MS,
          now,
          SWEEP_BATCH,
          keys.jobKey(''),
        )) as string[];
        for (const json of raw) {
          await ordering.moveIn(keys, decodeEntry(json));
          added += 1;
        }
      }
      return added;
    },
    async waiting(jobId) {
      const found = await Promise.all(queues.partitions.map((p) => redis.hget(p.keys.orderingJobs, jobId)));
      const i = found.findIndex((f) => f !== null);
      const raw = found[i];
      return raw ? { entry: decodeEntry(raw), partition: (queues.partitions[i] as QueuePartition).keys } : null;
    },
    start(intervalMs = HANDOFF_GRACE_MS) {
      const run = () =>
        void ordering
          .sweep()
          .then((n) => n > 0 && deps.logger?.warn({ added: n }, 'ordered jobs left out by a crash added to the queue'))
          .catch((err: unknown) => deps.logger?.warn({ err: coerceError(err).message }, 'ordering sweep failed'));
      timer = setInterval(run, intervalMs);
      timer.unref();
    },
    stop() {
      clearInterval(timer);
    },
  };
  return ordering;
}
