import type { Queue } from 'bullmq';
import type { RedisClient, RelayKeys } from '../redis/redis-connection.js';

export interface QueueStats {
  queue: { waiting: number; delayed: number; active: number; completed: number; failed: number };
  dlq: number;
  results: number;
}

/** Queue counts per state and the dead-letter size: O(1) Redis calls. */
export async function getStats(queue: Queue, redis: RedisClient, keys: RelayKeys): Promise<QueueStats> {
  const [c, dlq, results] = await Promise.all([
    queue.getJobCounts('waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed'),
    redis.zcard(keys.dlq),
    redis.xlen(keys.results),
  ]);
  return {
    queue: {
      waiting: (c.waiting ?? 0) + (c.prioritized ?? 0),
      delayed: c.delayed ?? 0,
      active: c.active ?? 0,
      completed: c.completed ?? 0,
      failed: c.failed ?? 0,
    },
    dlq,
    results,
  };
}
