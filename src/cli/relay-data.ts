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
