import type { Config } from '../config/config.js';
import { hashTaggedPrefix } from '../config/config.js';
import { createRedisConnection, relayKeys } from '../redis/redis-connection.js';

/**
 * Whether anything of action-relay lives under the configured prefix: actions, or a queue,
 * results stream or dead letter of any partition. Read with EXISTS only (one key per call, so
 * that it works on a Redis Cluster): a read command under a mistyped prefix creates no key.
 */
export async function hasRelayData(config: Config): Promise<boolean> {
  const keys = relayKeys(hashTaggedPrefix(config.ACTION_RELAY_PREFIX), config.QUEUE_PARTITIONS);
  const names = [
    keys.actions,
    keys.actionVersions,
    ...keys.partitions.flatMap((p) => [`${p.bullPrefix}:${p.queueName}:meta`, `${p.bullPrefix}:${p.queueName}:id`, p.results, p.dlq]),
  ];
  const redis = createRedisConnection(config, { name: 'action-relay-cli' });
  redis.on('error', () => undefined);
  try {
    for (const name of names) if ((await redis.exists(name)) === 1) return true;
    return false;
  } finally {
    await redis.quit().catch(() => redis.disconnect());
  }
}

/** Where the CLI looks for Redis, for a message: host and port only (REDIS_URL may hold a password). */
export function redisWhere(config: Pick<Config, 'REDIS_URL' | 'REDIS_CLUSTER_NODES' | 'REDIS_SENTINELS'>): string {
  if (config.REDIS_SENTINELS?.length) return `the Sentinels ${config.REDIS_SENTINELS.join(', ')} (REDIS_SENTINELS)`;
  if (config.REDIS_CLUSTER_NODES?.length) return `the cluster nodes ${config.REDIS_CLUSTER_NODES.join(', ')} (REDIS_CLUSTER_NODES)`;
  return `${new URL(config.REDIS_URL).host} (REDIS_URL)`;
}

/**
 * Fails at once, with one clear line, when Redis does not answer a PING within `timeoutMs`: a
 * command run against a Redis that is down would otherwise wait through the client's retries
 * (about half a minute) and end with the driver's own words.
 */
export async function requireRedis(config: Config, timeoutMs = 5000): Promise<void> {
  const redis = createRedisConnection(config, { name: 'action-relay-cli' });
  redis.on('error', () => undefined);
  let timer: NodeJS.Timeout | undefined;
  try {
    const answered = await Promise.race([
      redis.ping().then(
        () => true,
        () => false,
      ),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
    ]);
    if (!answered) throw new Error(`Redis does not answer at ${redisWhere(config)} within ${timeoutMs / 1000} s: nothing was done`);
  } finally {
    clearTimeout(timer);
    redis.disconnect();
  }
}
