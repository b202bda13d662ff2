import { Queue } from 'bullmq';
import type { RedisClient, RelayKeys } from '../redis/redis-connection.js';

/** Name of the custom backoff strategy: the processor computes each delay itself. */
export const BACKOFF_TYPE = 'relay';
/**
 * BullMQ's own attempt limit is set out of reach: the processor ends a job (delivered or dead)
 * itself, using the action's current retry.maxAttempts.
 */
export const BULL_ATTEMPTS = 1000;

export interface DeliveryQueueOptions {
  connection: RedisClient;
  keys: RelayKeys;
  /** Seconds a finished job stays readable. */
  retentionSeconds: number;
}

export function createDeliveryQueue(opts: DeliveryQueueOptions): Queue {
  return new Queue(opts.keys.queueName, {
    connection: opts.connection,
    prefix: opts.keys.bullPrefix,
    defaultJobOptions: {
      attempts: BULL_ATTEMPTS,
      backoff: { type: BACKOFF_TYPE },
      removeOnComplete: { age: opts.retentionSeconds },
      removeOnFail: { age: opts.retentionSeconds * 7 },
    },
  });
}
