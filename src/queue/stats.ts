import type { RedisClient } from '../redis/redis-connection.js';
import type { DeliveryQueues, QueuePartition } from './delivery-queue.js';

export interface QueueCounts {
  waiting: number;
  delayed: number;
  active: number;
  completed: number;
  failed: number;
}

/** One partition: its names (the results stream is what the journey engine reads) and counts. */
export interface PartitionStats {
  index: number;
  /** The BullMQ queue's key prefix, `<bullPrefix>:deliveries`. */
  queue: string;
  /** The results stream of this partition's jobs. */
  results: string;
  counts: QueueCounts;
  dlq: number;
  resultsLength: number;
}

export interface QueueStats {
  /** Summed over every partition. */
  queue: QueueCounts;
  dlq: number;
  results: number;
  /** One entry per partition (QUEUE_PARTITIONS). */
  partitions: PartitionStats[];
}

async function partitionStats(p: QueuePartition, redis: RedisClient): Promise<PartitionStats> {
  const [c, dlq, resultsLength] = await Promise.all([
    p.queue.getJobCounts('waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed'),
    redis.zcard(p.keys.dlq),
    redis.xlen(p.keys.results),
  ]);
  return {
    index: p.keys.index,
    queue: `${p.keys.bullPrefix}:${p.keys.queueName}`,
    results: p.keys.results,
    counts: {
      waiting: (c.waiting ?? 0) + (c.prioritized ?? 0),
      delayed: c.delayed ?? 0,
      active: c.active ?? 0,
      completed: c.completed ?? 0,
      failed: c.failed ?? 0,
    },
    dlq,
    resultsLength,
  };
}

/** Queue counts per state and the dead-letter size, per partition and summed: O(1) Redis calls per partition. */
export async function getStats(queues: DeliveryQueues, redis: RedisClient): Promise<QueueStats> {
  const partitions = await Promise.all(queues.partitions.map((p) => partitionStats(p, redis)));
  const queue: QueueCounts = { waiting: 0, delayed: 0, active: 0, completed: 0, failed: 0 };
  for (const p of partitions) for (const state of Object.keys(queue) as (keyof QueueCounts)[]) queue[state] += p.counts[state];
  return {
    queue,
    dlq: partitions.reduce((n, p) => n + p.dlq, 0),
    results: partitions.reduce((n, p) => n + p.resultsLength, 0),
    partitions,
  };
}
