import { Queue, type Job, type Telemetry } from 'bullmq';
import type { PartitionKeys, RedisClient, RelayKeys } from '../redis/redis-connection.js';

/** Name of the custom backoff strategy: the processor computes each delay itself. */
export const BACKOFF_TYPE = 'relay';
/**
 * BullMQ's own attempt limit is set out of reach: the processor ends a job (delivered or dead)
 * itself, using the action's current retry.maxAttempts.
 */
export const BULL_ATTEMPTS = 1000;
/**
 * Priority of a fresh job. BullMQ serves its plain wait list (priority 0) before prioritized jobs;
 * that lane is kept for deferred jobs coming back for a reserved rate-limit slot, so they never
 * wait behind a backlog of fresh ones. Replays (REPLAY_PRIORITY) come after both.
 */
export const FRESH_PRIORITY = 1;

export interface DeliveryQueueOptions {
  connection: RedisClient;
  keys: PartitionKeys;
  /** Seconds a finished job stays readable. */
  retentionSeconds: number;
  /** BullMQ's telemetry (its `add` spans nest under the enqueue span), when tracing. */
  telemetry?: Telemetry | undefined;
}

export function createDeliveryQueue(opts: DeliveryQueueOptions): Queue {
  return new Queue(opts.keys.queueName, {
    connection: opts.connection,
    prefix: opts.keys.bullPrefix,
    ...(opts.telemetry ? { telemetry: opts.telemetry } : {}),
    defaultJobOptions: {
      attempts: BULL_ATTEMPTS,
      backoff: { type: BACKOFF_TYPE },
      removeOnComplete: { age: opts.retentionSeconds },
      removeOnFail: { age: opts.retentionSeconds * 7 },
    },
  });
}

/** One partition's BullMQ queue with its keys. */
export interface QueuePartition {
  keys: PartitionKeys;
  queue: Queue;
}

/** The delivery queue of every partition (QUEUE_PARTITIONS), and where a job goes or is. */
export interface DeliveryQueues {
  readonly partitions: readonly QueuePartition[];
  /** Where jobs of this rate-limit key go: always the same partition. */
  forLimitKey(limitKey: string): QueuePartition;
  /** Finds a job in whichever partition holds it (one lookup per partition, in parallel). */
  findJob(jobId: string): Promise<{ job: Job; partition: QueuePartition } | null>;
  close(): Promise<void>;
}

export interface DeliveryQueuesOptions {
  connection: RedisClient;
  keys: RelayKeys;
  retentionSeconds: number;
  telemetry?: Telemetry | undefined;
}

export function createDeliveryQueues(opts: DeliveryQueuesOptions): DeliveryQueues {
  const partitions = opts.keys.partitions.map((keys) => ({
    keys,
    queue: createDeliveryQueue({
      connection: opts.connection,
      keys,
      retentionSeconds: opts.retentionSeconds,
      telemetry: opts.telemetry,
    }),
  }));
  return {
    partitions,
    forLimitKey: (limitKey) => partitions[opts.keys.partitionFor(limitKey).index] as QueuePartition,
    async findJob(jobId) {
      const found = await Promise.all(partitions.map((p) => p.queue.getJob(jobId)));
      const i = found.findIndex((j) => j !== undefined && j !== null);
      const job = found[i];
      return job ? { job, partition: partitions[i] as QueuePartition } : null;
    },
    async close() {
      await Promise.all(partitions.map((p) => p.queue.close()));
    },
  };
}
