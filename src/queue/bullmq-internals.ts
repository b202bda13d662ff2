import { Job, type Queue } from 'bullmq';
import { luaScript } from '../redis/lua-script.js';
import type { PartitionKeys, RedisClient } from '../redis/redis-connection.js';
import type { JobOutcome } from './job-schema.js';

/**
 * What the relay relies on inside BullMQ beyond its public API, in one place. Each item is
 * checked against a real Redis by test/integration/bullmq-internals.redis.test.ts, pinned to
 * BULLMQ_VERSION: a BullMQ upgrade runs that test first.
 *
 * - A job is a Redis hash at `<prefix>:<queue>:<id>` (RelayKeys.jobKey); the relay adds its own
 *   fields to it (JOB_FIELDS), which BullMQ keeps until it removes the job.
 * - The hash's `priority` field is what BullMQ reads when it promotes a delayed job to the wait
 *   list (0) or the prioritized set (> 0).
 * - A job added with a priority above 0 and no delay is a hash (name, data, opts, timestamp, delay,
 *   priority), an entry in the prioritized set scored from the priority and the `pc` counter, the
 *   marker that wakes workers (unless the queue is paused or maxed) and two events: the relay adds
 *   the next job of an ordering line that way itself (ADD_PRIORITIZED_LUA), inside its finish script.
 * - A dead-lettered job ends as *completed* (the processor returns its outcome), so the completed
 *   set holds delivered and dead jobs alike; the return value tells them apart.
 */
export const BULLMQ_VERSION = '5.81.5';

/** Fields the relay writes into a BullMQ job hash. */
export const JOB_FIELDS = {
  /** Set once when the job ends (delivered | dead): a rerun after a crash finds it. */
  outcome: 'arOutcome',
  /** The record of failed attempt n, kept until the job ends. */
  attempt: (n: number) => `arAttempt:${n}`,
  /** BullMQ's own: the priority it reads when it promotes the job. */
  priority: 'priority',
} as const;

/** Sets the priority BullMQ reads when it promotes the job; KEYS[1] job hash, ARGV[1] priority. No-op on a job gone. */
const SET_PRIORITY = luaScript(
  `if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], '${JOB_FIELDS.priority}', ARGV[1]) end return 0`,
);

/** The Redis key of a job's hash, from the job itself. */
export function jobHashKey(job: Job): string {
  return `${job.queueQualifiedName}:${job.id as string}`;
}

/** Sends a job to the delayed set until `until` with `priority` for when it comes back (0 = wait list, served first). */
export async function moveToDelayedWithPriority(
  redis: RedisClient,
  job: Job,
  until: number,
  priority: number,
  token: string | undefined,
): Promise<void> {
  await SET_PRIORITY.run(redis, 1, jobHashKey(job), String(priority));
  await job.moveToDelayed(until, token);
}

/**
 * The key BullMQ deduplicates on (`<prefix>:<queue>:de:<id>`, set by its deduplicateJob script
 * with the job id as value): ordered jobs waiting in line hold their idempotency key there.
 * Pinned by test/integration/ordering.redis.test.ts.
 */
export const bullDeduplicationKey = (keys: PartitionKeys, id: string) => `${keys.bullPrefix}:${keys.queueName}:de:${id}`;

/**
 * The options BullMQ's add would store for a job of `queue` (its defaults, in BullMQ's short names,
 * as JSON) less the job's own (jobId, priority, timestamp), which ADD_PRIORITIZED_LUA sets: one
 * string per queue, handed to the finish script so that it can add a job with no BullMQ code at hand.
 */
export function storedOptionsTemplate(queue: Queue): string {
  return JSON.stringify(new Job(queue, '', {}, queue.defaultJobOptions).asJSON().opts);
}

/**
 * A Lua function doing what BullMQ's addPrioritizedJob script does for a job with a custom id, a
 * priority above 0 and no delay, parent or deduplication (the job hash as storeJob writes it, the
 * prioritized set scored by getPriorityScore, addBaseMarkerIfNeeded, the `added` and `waiting`
 * events). It skips the `id` counter, which only numbers jobs added without an id. A job whose
 * hash exists is left as it is, as BullMQ keeps one job per id.
 * Arguments: the queue's key prefix (`<prefix>:<queue>:`, RelayKeys.jobKey('')), job id, name,
 * data (JSON, as BullMQ stores it: JSON.stringify of the data), options template
 * (storedOptionsTemplate), timestamp ms, priority.
 */
export const ADD_PRIORITIZED_LUA = `
local function addPrioritizedJob(q, jobId, name, data, template, timestamp, priority)
  local jobKey = q .. jobId
  if redis.call('EXISTS', jobKey) == 1 then return end
  local meta, events = q .. 'meta', q .. 'events'
  local attrs = redis.call('HMGET', meta, 'paused', 'concurrency', 'opts.maxLenEvents')
  -- The options as storeJob writes them: the template's fields and the job's own. Spliced as text
  -- (a decode and an encode per job cost more than the rest of the add); ids are UUIDs, else encoded.
  local own = ('"jobId":' .. (string.find(jobId, '^[%w%-]+$') and ('"' .. jobId .. '"') or cjson.encode(jobId)) ..
    ',"priority":' .. priority .. ',"timestamp":' .. timestamp .. '}')
  local opts = template == '{}' and ('{' .. own) or (string.sub(template, 1, -2) .. ',' .. own)
  redis.call('HMSET', jobKey, 'name', name, 'data', data, 'opts', opts, 'timestamp', timestamp, 'delay', 0, 'priority', priority)
  redis.call('XADD', events, '*', 'event', 'added', 'jobId', jobId, 'name', name)
  local score = priority * 0x100000000 + redis.call('INCR', q .. 'pc') % 0x100000000
  redis.call('ZADD', q .. 'prioritized', score, jobId)
  local maxed = attrs[1] or (attrs[2] and redis.call('LLEN', q .. 'active') >= tonumber(attrs[2]))
  if not maxed then redis.call('ZADD', q .. 'marker', 0, '0') end
  redis.call('XADD', events, 'MAXLEN', '~', attrs[3] or 10000, '*', 'event', 'waiting', 'jobId', jobId)
end
`;

/** The BullMQ state of every job the relay ended, delivered or dead (the return value says which). */
export const ENDED_STATE = 'completed';

/** What the processor returned for an ended job. */
export function endedOutcome(job: Job): JobOutcome | null {
  return (job.returnvalue as JobOutcome | null) ?? null;
}

/**
 * BullMQ starts each connection by asking Redis for its version. A queue or worker closed before
 * that answer drops its listeners and then emits the failure, which surfaces as an unhandled
 * rejection ("Connection is closed"): a CLI command that fails at once, before Redis answered,
 * does exactly that. Waits for the start-up to finish, at most `maxMs` (a Redis that is down
 * costs a shutdown that much, well within its grace margin).
 */
export async function settleStartup(
  items: readonly { waitUntilReady(): Promise<unknown> }[],
  connection: RedisClient,
  maxMs = 1000,
): Promise<void> {
  if (connection.status === 'end') return;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, maxMs)));
  await Promise.race([Promise.allSettled(items.map((i) => i.waitUntilReady())), late]);
  clearTimeout(timer);
}
