import type { Logger } from 'pino';
import { Cluster } from 'ioredis';
import { coerceError } from '../errors/errors.js';
import type { RedisClient } from './redis-connection.js';

/** Redis is set up in a way that loses jobs: the process refuses to start. */
export class RedisSetupError extends Error {
  readonly code = 'redis_setup';
}

/**
 * Refuses to start unless Redis's `maxmemory-policy` is `noeviction`: under any other policy a full
 * Redis silently deletes keys (a job, a lock, a dead letter) instead of refusing writes, which
 * BullMQ cannot survive. A managed Redis may refuse CONFIG GET: then a warning, not a refusal.
 * On a Redis Cluster every master is asked.
 */
export async function checkEvictionPolicy(redis: RedisClient, logger: Logger): Promise<void> {
  const nodes = redis instanceof Cluster ? redis.nodes('master') : [redis];
  for (const node of nodes) {
    let policy: string | undefined;
    try {
      const reply = (await node.config('GET', 'maxmemory-policy')) as string[];
      policy = reply[1];
    } catch (err: unknown) {
      logger.warn(
        { err: coerceError(err).message },
        'could not read maxmemory-policy (CONFIG GET refused): make sure it is noeviction, or a full Redis will evict jobs',
      );
      return;
    }
    if (policy !== undefined && policy !== 'noeviction') {
      const where = `${node.options.host ?? ''}:${node.options.port ?? ''}`;
      throw new RedisSetupError(
        `Redis at ${where} has maxmemory-policy ${policy}: it must be noeviction (CONFIG SET maxmemory-policy noeviction, or in redis.conf), or a full Redis deletes jobs instead of refusing new ones`,
      );
    }
  }
}
