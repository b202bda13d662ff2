import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { Config } from '../config/config.js';

export type RedisClient = Redis | Cluster;

/**
 * Opens a connection of the configured kind. BullMQ needs `maxRetriesPerRequest: null` so that
 * commands wait through a reconnect instead of failing.
 */
export function createRedisConnection(
  config: Pick<Config, 'REDIS_URL' | 'REDIS_CLUSTER_NODES'>,
  opts: { forBullmq?: boolean; name?: string } = {},
): RedisClient {
  const common: RedisOptions = {
    maxRetriesPerRequest: opts.forBullmq ? null : 20,
    enableReadyCheck: true,
    connectionName: opts.name,
    retryStrategy: (times) => Math.min(200 * times, 2000),
  };
  if (config.REDIS_CLUSTER_NODES && config.REDIS_CLUSTER_NODES.length > 0) {
    const nodes = config.REDIS_CLUSTER_NODES.map((n) => {
      const i = n.lastIndexOf(':');
      return { host: n.slice(0, i), port: Number(n.slice(i + 1)) };
    });
    return new Cluster(nodes, { redisOptions: common, enableReadyCheck: true });
  }
  return new Redis(config.REDIS_URL, common);
}

/** Every key name of one deployment, under its hash-tagged prefix. */
export interface RelayKeys {
  /** BullMQ prefix of the delivery queue. */
  bullPrefix: string;
  queueName: string;
  actions: string;
  actionVersions: string;
  actionsChannel: string;
  results: string;
  dlq: string;
  dlqRecords: string;
  /** The GCRA state of one rate-limit key. */
  rateLimit(key: string): string;
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
  jobKey(jobId: string): string;
}

export const QUEUE_NAME = 'deliveries';

export function relayKeys(taggedPrefix: string): RelayKeys {
  return {
    bullPrefix: taggedPrefix,
    queueName: QUEUE_NAME,
    actions: `${taggedPrefix}:actions`,
    actionVersions: `${taggedPrefix}:actions:versions`,
    actionsChannel: `${taggedPrefix}:actions:changed`,
    results: `${taggedPrefix}:results`,
    dlq: `${taggedPrefix}:dlq`,
    dlqRecords: `${taggedPrefix}:dlq:records`,
    rateLimit: (key) => `${taggedPrefix}:rl:${key}`,
    rateLimitPause: (key) => `${taggedPrefix}:rl:${key}:pause`,
    rateLimitLeases: (key) => `${taggedPrefix}:rl:${key}:leases`,
    circuit: (key) => `${taggedPrefix}:cb:${key}`,
    token: (id) => `${taggedPrefix}:tok:${id}`,
    tokenLock: (id) => `${taggedPrefix}:tok:${id}:lock`,
    jobKey: (jobId) => `${taggedPrefix}:${QUEUE_NAME}:${jobId}`,
  };
}
