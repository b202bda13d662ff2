import type { JobsOptions } from 'bullmq';
import type { Logger } from 'pino';
import { coerceError } from '../errors/errors.js';
import { luaScript } from '../redis/lua-script.js';
import type { PartitionKeys, RedisClient } from '../redis/redis-connection.js';
import type { DeliveryQueues, QueuePartition } from './delivery-queue.js';
import type { JobData } from './job-schema.js';
import { bullDeduplicationKey } from './bullmq-internals.js';

/*
 * Per-key ordering. Jobs of one action with the same orderingKey form a line: a Redis list of job
 * ids in enqueue order, in the partition of the action (one hash tag, so every script here is one
 * slot of a Redis Cluster). Only the first job of a line is in the BullMQ queue; the others wait
 * outside it, their entry (what BullMQ needs to add them) in the partition's `orderingJobs` hash.
 * While the first one retries or is deferred it stays first, so the ones behind it wait, and
 * other lines are not held up. When it ends, delivered or dead, the finish script (outcome-writer)
 * takes it off its line and marks the next one due in the same atomic step (RELEASE_LUA below);
 * the process that ended it then adds the next one to BullMQ. A crash in between leaves the mark
 * in `orderingDue`, and the sweep adds it. Adding is idempotent: BullMQ keeps one job per id.
 * Jobs without an orderingKey never touch any of this.
 */

/** What a job waiting in line keeps until it is added to the queue. */
export interface LineEntry {
  jobId: string;
  /** The action id (the BullMQ job name). */
  name: string;
  data: JobData;
  priority: number;
  /** When it was enqueued: the BullMQ timestamp, so that latency counts the wait in line. */
  enqueuedAt: number;
  /** Not sent before enqueuedAt + delayMs. */
  delayMs?: number;
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
 * behind it, marks that one due and returns its id and entry (else nil). Run in the same script
 * that writes the outcome, so that a line is never left without its next job due. A job found
 * elsewhere than first (which only a hand-edited queue can cause) is taken out all the same.
 * Arguments: line (list), entries (hash), due (zset) keys, the ended job's id, now ms.
 */
export const RELEASE_LUA = `
local function releaseLine(line, entries, due, jobId, now)
  redis.call('HDEL', entries, jobId)
  redis.call('ZREM', due, jobId)
  if redis.call('LINDEX', line, 0) ~= jobId then
    redis.call('LREM', line, 1, jobId)
    return nil
  end
  redis.call('LPOP', line)
  local nextId = redis.call('LINDEX', line, 0)
  if not nextId then return nil end
  redis.call('ZADD', due, now, nextId)
  return { nextId, redis.call('HGET', entries, nextId) }
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
  // BullMQ delays from `timestamp`: only a delay still to run is passed, else the job would take a trip through the delayed set.
  if (entry.delayMs && entry.enqueuedAt + entry.delayMs > now) opts.delay = entry.delayMs;
  return { name: entry.name, data: entry.data, opts };
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
        JSON.stringify(job.entry),
        now,
        job.deduplication?.ttlMs ?? 0,
      )) as [string, LineState];
      return { jobId, state };
    },
    async moveIn(keys, entry) {
      const { name, data, opts } = queueJob(entry, clock());
      await partitionOf(keys).queue.add(name, data, opts);
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
          await ordering.moveIn(keys, JSON.parse(json) as LineEntry);
          added += 1;
        }
      }
      return added;
    },
    async waiting(jobId) {
      const found = await Promise.all(queues.partitions.map((p) => redis.hget(p.keys.orderingJobs, jobId)));
      const i = found.findIndex((f) => f !== null);
      const raw = found[i];
      return raw ? { entry: JSON.parse(raw) as LineEntry, partition: (queues.partitions[i] as QueuePartition).keys } : null;
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
