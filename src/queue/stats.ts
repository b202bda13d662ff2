import type { RedisClient } from '../redis/redis-connection.js';
import type { DeliveryQueues, QueuePartition } from './delivery-queue.js';
import { countWaitingInLine } from './ordering.js';

export interface QueueCounts {
  waiting: number;
  delayed: number;
  active: number;
  /** Jobs delivered since the deployment's data was created (counted by the finish script). */
  delivered: number;
  /** Jobs dead-lettered since the deployment's data was created; `dlq` is how many are still kept. */
  dead: number;
  /** Jobs in BullMQ's failed set: stalled too often, or a fault of the relay itself. */
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
  /** Jobs with an orderingKey waiting behind an earlier job of their key: not in the queue yet, so not in `counts`. */
  waitingInLine: number;
}

export interface QueueStats {
  /** Summed over every partition. */
  queue: QueueCounts;
  dlq: number;
  results: number;
  /** Jobs with an orderingKey waiting behind an earlier job of their key, over every partition (not in `queue`). */
  waitingInLine: number;
  /** One entry per partition (QUEUE_PARTITIONS). */
  partitions: PartitionStats[];
}

async function partitionStats(p: QueuePartition, redis: RedisClient): Promise<PartitionStats> {
  // BullMQ's completed set holds delivered and dead jobs alike (for JOB_RETENTION_SECONDS): the
  // outcomes come from the counts the finish script keeps.
  const [c, [delivered, dead], dlq, resultsLength, waitingInLine] = await Promise.all([
    p.queue.getJobCounts('waiting', 'prioritized', 'delayed', 'active', 'failed'),
    redis.hmget(p.keys.outcomeCounts, 'delivered', 'dead'),
    redis.zcard(p.keys.dlq),
    redis.xlen(p.keys.results),
    countWaitingInLine(redis, p.keys),
  ]);
  return {
    index: p.keys.index,
    queue: `${p.keys.bullPrefix}:${p.keys.queueName}`,
    results: p.keys.results,
    counts: {
      waiting: (c.waiting ?? 0) + (c.prioritized ?? 0),
      delayed: c.delayed ?? 0,
      active: c.active ?? 0,
      delivered: Number(delivered ?? 0),
      dead: Number(dead ?? 0),
      failed: c.failed ?? 0,
    },
    dlq,
    resultsLength,
    waitingInLine,
  };
}

/** Queue counts per state and the dead-letter size, per partition and summed: O(1) Redis calls per partition. */
export async function getStats(queues: DeliveryQueues, redis: RedisClient): Promise<QueueStats> {
  const partitions = await Promise.all(queues.partitions.map((p) => partitionStats(p, redis)));
  const queue: QueueCounts = { waiting: 0, delayed: 0, active: 0, delivered: 0, dead: 0, failed: 0 };
  for (const p of partitions) for (const state of Object.keys(queue) as (keyof QueueCounts)[]) queue[state] += p.counts[state];
  return {
    queue,
    dlq: partitions.reduce((n, p) => n + p.dlq, 0),
    results: partitions.reduce((n, p) => n + p.resultsLength, 0),
    waitingInLine: partitions.reduce((n, p) => n + p.waitingInLine, 0),
    partitions,
  };
}
