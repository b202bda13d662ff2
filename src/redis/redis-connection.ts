import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { Config } from '../config/config.js';
import { followFailovers } from './sentinel-failover.js';

export type RedisClient = Redis | Cluster;

/**
 * Resolves once `client` is past its connection handshake (ready, or closed and queueing again).
 * A SUBSCRIBE sent during the handshake reaches Redis before ioredis's ready check (INFO), which a
 * subscribed connection refuses: ioredis then drops the connection and starts over (ioredis issue
 * #2037, ioredis 5.8.2 and later 5.x). Commands sent before or after the handshake wait in
 * ioredis's offline queue or go straight through, both safe.
 */
export async function pastHandshake(client: RedisClient): Promise<void> {
  while (client.status === 'connect') {
    await new Promise<void>((resolve) => {
      const done = () => {
        client.off('ready', done);
        client.off('close', done);
        resolve();
      };
      client.once('ready', done);
      client.once('close', done);
    });
  }
}

/**
 * Opens a connection of the configured kind. BullMQ needs `maxRetriesPerRequest: null` so that
 * commands wait through a reconnect instead of failing.
 */
export function createRedisConnection(
  config: Pick<Config, 'REDIS_URL' | 'REDIS_CLUSTER_NODES'> & Partial<Pick<Config, 'REDIS_SENTINELS' | 'REDIS_SENTINEL_MASTER'>>,
  opts: { forBullmq?: boolean; name?: string } = {},
): RedisClient {
  const common: RedisOptions = {
    maxRetriesPerRequest: opts.forBullmq ? null : 20,
    enableReadyCheck: true,
    connectionName: opts.name,
    retryStrategy: (times) => Math.min(200 * times, 2000),
    // A master demoted to replica (a failover it lived through) answers writes READONLY:
    // reconnect, which asks the sentinels for the new master, and send the command again.
    reconnectOnError: (err) => (err.message.startsWith('READONLY') ? 2 : false),
  };
  if (config.REDIS_CLUSTER_NODES && config.REDIS_CLUSTER_NODES.length > 0) {
    return new Cluster(config.REDIS_CLUSTER_NODES.map(hostPort), { redisOptions: common, enableReadyCheck: true });
  }
  if (config.REDIS_SENTINELS && config.REDIS_SENTINELS.length > 0) {
    // The master's credentials and database come from REDIS_URL, its address from the sentinels.
    const url = new URL(config.REDIS_URL);
    const sentinels = config.REDIS_SENTINELS.map(hostPort);
    const masterName = config.REDIS_SENTINEL_MASTER ?? 'mymaster';
    const client = new Redis({
      ...common,
      sentinels,
      name: masterName,
      ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
      ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
      db: Number(url.pathname.slice(1)) || 0,
      sentinelRetryStrategy: (times) => Math.min(200 * times, 2000),
    });
    // A failover is followed at once, not at the next error (see sentinel-failover.ts for why
    // not ioredis' own failoverDetector).
    followFailovers(client, sentinels, masterName);
    return client;
  }
  return new Redis(config.REDIS_URL, common);
}

function hostPort(n: string): { host: string; port: number } {
  const i = n.lastIndexOf(':');
  return { host: n.slice(0, i), port: Number(n.slice(i + 1)) };
}

/**
 * The keys of one queue partition: its BullMQ queue, results stream and dead letters share one
 * hash tag, so that ending a job (job hash + results + dead letter, one script) stays in one slot.
 */
export interface PartitionKeys {
  /** 0 to QUEUE_PARTITIONS - 1. */
  index: number;
  /** BullMQ prefix of this partition's queue (its hash tag). */
  bullPrefix: string;
  queueName: string;
  /** The results stream the journey engine reads. */
  results: string;
  dlq: string;
  dlqRecords: string;
  /** Jobs ended so far, by outcome (hash: delivered, dead), counted by the finish script. */
  outcomeCounts: string;
  jobKey(jobId: string): string;
  /**
   * The line of one action's jobs with one orderingKey (a list of job ids, enqueue order). Its
   * first job is the one in the queue; the others wait their turn outside it.
   */
  orderingLine(actionId: string, orderingKey: string): string;
  /** What an ordered job needs to be moved into the queue, by job id (hash), until it is there. */
  orderingJobs: string;
  /** Ordered jobs whose turn has come, by when (zset): the sweep moves in any a crash left out. */
  orderingDue: string;
  /** Left by a replay for the dead job's id: the new job's id and the dead job's summary (expires). */
  replayedAs(jobId: string): string;
  /**
   * Ended jobs of one minute (epoch ms / 60000), per action: a hash of `<actionId>|d` delivered,
   * `|x` dead and `|r` retries, written with the results entry; read by the console's counts.
   */
  activity(minute: number): string;
}

/**
 * Every key name of one deployment, under its hash-tagged prefix. The queue, results and
 * dead-letter names at the top level are partition 0's: the only partition when QUEUE_PARTITIONS
 * is 1 (then the results stream is `{prefix}:results`, as docs/delivery.md documents). With more, use
 * `partitions` and `partitionFor`.
 */
export interface RelayKeys extends PartitionKeys {
  partitions: readonly PartitionKeys[];
  /** The partition of a rate-limit key's jobs (stable: see `partitionIndex`). */
  partitionFor(limitKey: string): PartitionKeys;
  actions: string;
  actionVersions: string;
  actionsChannel: string;
  /** The GCRA state of one rate-limit key. */
  rateLimit(key: string): string;
  /** Slots reserved by deferred jobs of a rate-limit key (zset member jobId, score slot ms). */
  rateLimitSlots(key: string): string;
  /** The spacing each reserved slot of a rate-limit key was given at (hash field jobId). */
  rateLimitSpacing(key: string): string;
  /** Until when back-pressure pauses a rate-limit key. */
  rateLimitPause(key: string): string;
  /** In-flight permits of a rate-limit key (maxConcurrent). */
  rateLimitLeases(key: string): string;
  /** The circuit breaker state of a rate-limit key. */
  circuit(key: string): string;
  /** A cached access token, by the hash of the auth settings that obtain it. */
  token(id: string): string;
  /** Held by the one caller fetching that token. */
  tokenLock(id: string): string;
}

export const QUEUE_NAME = 'deliveries';

/**
 * The partition of a rate-limit key: FNV-1a (32 bit) of its UTF-8 bytes, modulo the partition
 * count. The same key lands in the same partition in every process and release, so one key's jobs
 * stay together.
 */
export function partitionIndex(limitKey: string, partitions: number): number {
  let h = 0x811c9dc5;
  for (const byte of Buffer.from(limitKey, 'utf8')) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % partitions;
}

/** `{tag}rest` with a tag of its own: `{tag:suffix}rest`, so its keys hash to another slot. */
function subTag(taggedPrefix: string, suffix: string): string {
  const close = taggedPrefix.indexOf('}');
  return `${taggedPrefix.slice(0, close)}:${suffix}${taggedPrefix.slice(close)}`;
}

/**
 * With one partition every key shares the deployment's hash tag, as before partitions existed.
 * With several, each partition's queue gets its own tag (`{prefix:p0}`, `{prefix:p1}`, ...) and so
 * does each rate-limit key (`{prefix:rl:<key>}`) and circuit (`{prefix:cb:<key>}`), so that they
 * spread over the shards of a Redis Cluster. Action definitions and tokens keep the deployment's
 * tag: read-mostly, and cached in each process.
 */
export function relayKeys(taggedPrefix: string, partitionCount = 1): RelayKeys {
  const partition = (index: number): PartitionKeys => {
    const tag = partitionCount === 1 ? taggedPrefix : subTag(taggedPrefix, `p${index}`);
    return {
      index,
      bullPrefix: tag,
      queueName: QUEUE_NAME,
      results: `${tag}:results`,
      dlq: `${tag}:dlq`,
      dlqRecords: `${tag}:dlq:records`,
      outcomeCounts: `${tag}:outcomes`,
      jobKey: (jobId) => `${tag}:${QUEUE_NAME}:${jobId}`,
      // An action id holds no ':', so no two (action, key) pairs share a line.
      orderingLine: (actionId, orderingKey) => `${tag}:ord:line:${actionId}:${orderingKey}`,
      orderingJobs: `${tag}:ord:jobs`,
      orderingDue: `${tag}:ord:due`,
      replayedAs: (jobId) => `${tag}:replayed:${jobId}`,
      activity: (minute) => `${tag}:activity:${minute}`,
    };
  };
  const partitions = Array.from({ length: partitionCount }, (_, i) => partition(i));
  const first = partitions[0] as PartitionKeys;
  const limit = (key: string) => (partitionCount === 1 ? `${taggedPrefix}:rl:${key}` : subTag(taggedPrefix, `rl:${key}`));
  const circuit = (key: string) => (partitionCount === 1 ? `${taggedPrefix}:cb:${key}` : subTag(taggedPrefix, `cb:${key}`));
  return {
    ...first,
    partitions,
    partitionFor: (limitKey) => partitions[partitionIndex(limitKey, partitionCount)] as PartitionKeys,
    actions: `${taggedPrefix}:actions`,
    actionVersions: `${taggedPrefix}:actions:versions`,
    actionsChannel: `${taggedPrefix}:actions:changed`,
    rateLimit: limit,
    rateLimitSlots: (key) => `${limit(key)}:slots`,
    rateLimitSpacing: (key) => `${limit(key)}:spacing`,
    rateLimitPause: (key) => `${limit(key)}:pause`,
    rateLimitLeases: (key) => `${limit(key)}:leases`,
    circuit,
    token: (id) => `${taggedPrefix}:tok:${id}`,
    tokenLock: (id) => `${taggedPrefix}:tok:${id}:lock`,
  };
}
