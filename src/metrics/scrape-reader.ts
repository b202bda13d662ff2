import type { ActionStore } from '../actions/action-store.js';
import type { DeliveryQueues } from '../queue/delivery-queue.js';
import type { PartitionKeys, RedisClient, RelayKeys } from '../redis/redis-connection.js';
import { countWaitingInLine } from '../queue/ordering.js';
import { createOldestWaitingProbe } from './oldest-waiting.js';

/**
 * The Redis reads of one scrape, each named so that a failure is counted by what failed
 * (`action_relay_redis_errors_total{op}`).
 */
export const SCRAPE_OPS = ['ping', 'queue_counts', 'oldest_waiting', 'results_stream', 'limit_keys'] as const;
export type ScrapeOp = (typeof SCRAPE_OPS)[number];

export type QueueState = 'waiting' | 'active' | 'delayed' | 'dlq';

export interface PartitionReading {
  counts: Record<QueueState, number>;
  /** Jobs with an orderingKey waiting behind an earlier job of their key (not in the queue yet). */
  waitingInLine: number;
}

export interface ResultsReading {
  /** Entries in the partition's results stream. */
  length: number;
  /** Entries each consumer group has not read yet (null: Redis cannot tell, see `groupLag`). */
  groups: { name: string; lag: number | null }[];
}

export type CircuitStateName = 'closed' | 'open' | 'half_open';

/** One rate-limit key that some action uses: its circuit, reserved slots and back-pressure pause. */
export interface LimitKeyReading {
  key: string;
  /** Absent when no action of the key has a circuitBreaker. */
  circuit?: CircuitStateName;
  /** Deferred jobs holding a future slot of the key. */
  reservedSlots: number;
  /** Seconds the third party's Retry-After still pauses the key (0 when not paused). */
  pausedSeconds: number;
}

/** What one scrape read; a field is absent when its read failed or timed out (its gauges are then dropped). */
export interface ScrapeSnapshot {
  redisUp: boolean;
  failed: ScrapeOp[];
  /** Indexed by partition. */
  partitions?: PartitionReading[];
  oldestWaitingSeconds?: number[];
  results?: ResultsReading[];
  limitKeys?: LimitKeyReading[];
}

export interface ScrapeReaderDeps {
  redis: RedisClient;
  queues: DeliveryQueues;
  keys: RelayKeys;
  store: ActionStore;
  /** Budget of all the Redis reads of one scrape. @defaultValue 2000 */
  timeoutMs?: number;
  now?: () => number;
}

export class ScrapeTimeoutError extends Error {
  constructor(op: ScrapeOp, ms: number) {
    super(`${op}: no answer from Redis within ${ms} ms`);
  }
}

/**
 * Reads, at scrape time, everything the queue, stream and circuit gauges show, within one
 * deadline: Prometheus gets an answer (with `action_relay_redis_up 0`) instead of a scrape
 * timeout that would mark the process down and page the wrong cause. A connection that is not
 * ready fails at once, so a Redis outage adds nothing to ioredis's offline queue.
 *
 * Concurrent callers share one read: prom-client collects every metric of a scrape at once.
 */
export function createScrapeReader(deps: ScrapeReaderDeps): () => Promise<ScrapeSnapshot> {
  const { redis, queues, keys, store } = deps;
  const timeoutMs = deps.timeoutMs ?? 2000;
  const now = deps.now ?? Date.now;
  const oldest = queues.partitions.map((p) => createOldestWaitingProbe(redis, p.keys, now));
  let pending: Promise<ScrapeSnapshot> | undefined;

  async function read(): Promise<ScrapeSnapshot> {
    const deadline = now() + timeoutMs;
    const failed: ScrapeOp[] = [];
    const run = async <T>(op: ScrapeOp, fn: () => Promise<T>): Promise<T | undefined> => {
      try {
        if (redis.status !== 'ready') throw new Error(`redis connection ${redis.status}`);
        return await withDeadline(op, fn(), deadline - now());
      } catch {
        failed.push(op);
        return undefined;
      }
    };
    const pong = await run('ping', () => redis.ping());
    if (pong === undefined) return { redisUp: false, failed };
    const [partitions, oldestWaitingSeconds, results, limitKeys] = await Promise.all([
      run('queue_counts', () => Promise.all(queues.partitions.map(async (p) => partitionCounts(p.queue, redis, p.keys)))),
      run('oldest_waiting', () => Promise.all(oldest.map((probe) => probe()))),
      run('results_stream', () => Promise.all(keys.partitions.map((p) => resultsOf(redis, p.results)))),
      run('limit_keys', () => readLimitKeys(redis, keys, store, now())),
    ]);
    return { redisUp: true, failed, partitions, oldestWaitingSeconds, results, limitKeys };
  }

  return () => {
    pending ??= read().finally(() => {
      pending = undefined;
    });
    return pending;
  };
}

function withDeadline<T>(op: ScrapeOp, p: Promise<T>, ms: number): Promise<T> {
  if (ms <= 0) return Promise.reject(new ScrapeTimeoutError(op, 0));
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new ScrapeTimeoutError(op, ms)), ms);
  });
  // A read that loses the race still settles later: its rejection must not go unhandled.
  p.catch(() => undefined);
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function partitionCounts(
  queue: DeliveryQueues['partitions'][number]['queue'],
  redis: RedisClient,
  keys: PartitionKeys,
): Promise<PartitionReading> {
  const [c, dlq, waitingInLine] = await Promise.all([
    queue.getJobCounts('waiting', 'prioritized', 'active', 'delayed'),
    redis.zcard(keys.dlq),
    countWaitingInLine(redis, keys),
  ]);
  return {
    counts: {
      waiting: (c.waiting ?? 0) + (c.prioritized ?? 0),
      active: c.active ?? 0,
      delayed: c.delayed ?? 0,
      dlq,
    },
    waitingInLine,
  };
}

/** XLEN and XINFO GROUPS of one results stream (a stream not yet created has no entries and no groups). */
async function resultsOf(redis: RedisClient, stream: string): Promise<ResultsReading> {
  const length = await redis.xlen(stream);
  if (length === 0) {
    const exists = await redis.exists(stream);
    if (!exists) return { length: 0, groups: [] };
  }
  const raw = (await redis.xinfo('GROUPS', stream)) as unknown[][];
  const groups = raw.map((fields) => groupLag(fields, length));
  return { length, groups };
}

/**
 * A consumer group's lag from XINFO GROUPS (Redis 7: `lag`). Redis answers nil when deletions
 * make the count unknowable; then, when the group has read nothing yet, every entry is unread.
 */
export function groupLag(fields: unknown[], length: number): { name: string; lag: number | null } {
  const info = new Map<string, unknown>();
  for (let i = 0; i + 1 < fields.length; i += 2) info.set(String(fields[i]), fields[i + 1]);
  const name = String(info.get('name'));
  const lag = info.get('lag');
  if (typeof lag === 'number') return { name, lag };
  if (info.get('last-delivered-id') === '0-0') return { name, lag: length };
  return { name, lag: null };
}

/**
 * The rate-limit keys of the stored actions, with their circuit (only for keys that have a
 * circuitBreaker), reserved slots and pause. Compiled actions come from the store's cache, so a
 * scrape costs HKEYS plus one pipeline of three reads per key.
 */
async function readLimitKeys(redis: RedisClient, keys: RelayKeys, store: ActionStore, t: number): Promise<LimitKeyReading[]> {
  const ids = await redis.hkeys(keys.actions);
  const compiled = await Promise.all(ids.map((id) => store.getCompiled(id).catch(() => null)));
  const byKey = new Map<string, boolean>();
  for (const a of compiled) {
    if (!a) continue;
    byKey.set(a.limitKey, (byKey.get(a.limitKey) ?? false) || a.definition.circuitBreaker !== undefined);
  }
  return Promise.all(
    [...byKey].map(async ([key, breaker]) => {
      const [[state, openUntil], slots, pause] = await Promise.all([
        breaker ? redis.hmget(keys.circuit(key), 'state', 'openUntil') : Promise.resolve([null, null]),
        redis.zcount(keys.rateLimitSlots(key), String(t), '+inf'),
        redis.get(keys.rateLimitPause(key)),
      ]);
      const reading: LimitKeyReading = {
        key,
        reservedSlots: slots,
        pausedSeconds: Math.max(0, (Number(pause ?? 0) - t) / 1000),
      };
      if (breaker) reading.circuit = circuitOf(state ?? null, Number(openUntil ?? 0), t);
      return reading;
    }),
  );
}

/** The breaker's hash as a worker would find it now: an open circuit past openUntil lets the next job probe. */
export function circuitOf(state: string | null, openUntil: number, t: number): CircuitStateName {
  if (state === 'open') return t < openUntil ? 'open' : 'half_open';
  if (state === 'half') return 'half_open';
  return 'closed';
}
