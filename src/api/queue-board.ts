import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import type { BeforeHook } from '@bull-board/api/dist/types.js';
import { FastifyAdapter } from '@bull-board/fastify';
import type { Queue } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import type { RelayContext } from '../context/relay-context.js';
import { JOB_FIELDS, jobHashKey } from '../queue/bullmq-internals.js';
import type { JobOutcome } from '../queue/job-schema.js';
import { DlqBoardAdapter } from './dlq-board-adapter.js';

/** Where bull-board is served; under /admin/, so ADMIN_TOKEN guards it with the rest. */
export const QUEUE_BOARD_PATH = '/admin/queues';

/**
 * Refuses the board's operations that would bypass the producer or replay on a delivery queue
 * (the UI only hides buttons; this is what holds):
 * - adding a job or editing its data skips parameter validation and idempotency: use POST /v1/jobs;
 * - retrying a completed job delivers it twice (delivered) or bypasses replay (dead: its dead letter
 *   stays, and replay is what takes the action's current definition). Failed jobs (stalled too often)
 *   may be retried: one the stalled sweeper has dead-lettered already completes as dead, sending
 *   nothing (the worker finds its end), so its dead letter is what to replay;
 * - emptying, obliterating or cleaning jobs that have not ended loses them without an outcome;
 * - cleaning a completed job early lets its idempotency key through again (BullMQ's clean removes
 *   its deduplication key) and turns its status into 404: completed jobs expire by themselves after
 *   JOB_RETENTION_SECONDS;
 * - a failed job (stalled too often) has no outcome until the stalled sweeper writes one: only one
 *   that has it may be cleaned, one by one.
 */

function guardDeliveries(deliveries: ReadonlyMap<string, Queue>): BeforeHook {
  const deny = (message: string) => ({ allow: false, status: 403 as const, message });
  return async ({ route, request }) => {
    const params = request.params as { queueName?: string; queueStatus?: string; jobId?: string };
    // fastify has decoded the parameter already; bull-board answers an unknown name itself.
    const queue = params.queueName === undefined ? undefined : deliveries.get(params.queueName);
    if (!queue) return;
    if (route === '/api/queues/:queueName/add' || route === '/api/queues/:queueName/:jobId/update-data') {
      return deny('jobs are enqueued through POST /v1/jobs, which validates them against their action');
    }
    const completedRetry =
      (route === '/api/queues/:queueName/retry/:queueStatus' && params.queueStatus === 'completed') ||
      (route === '/api/queues/:queueName/:jobId/retry' &&
        params.jobId !== undefined &&
        (await (await queue.getJob(params.jobId))?.getState()) === 'completed');
    if (completedRetry) return deny('a completed job was delivered or dead-lettered: replay dead letters with POST /v1/dlq/replay');
    // Removing a job that has not ended loses it: no results entry, so its journey never continues.
    if (route === '/api/queues/:queueName/empty' || route === '/api/queues/:queueName/obliterate') {
      return deny('removing unfinished jobs would leave their journeys without an outcome');
    }
    if (route === '/api/queues/:queueName/clean/:queueStatus') {
      return deny(
        'jobs are not cleaned in bulk: finished jobs expire after JOB_RETENTION_SECONDS (removing them early lets their idempotency keys through again), and the others have not ended yet',
      );
    }
    if (route === '/api/queues/:queueName/:jobId/clean' && params.jobId !== undefined) {
      const job = await queue.getJob(params.jobId);
      const state = await job?.getState();
      if (state === 'completed') {
        return deny(
          `job ${params.jobId} expires after JOB_RETENTION_SECONDS: removing it early would let its idempotency key through again`,
        );
      }
      if (state === 'failed' && job && (await (await queue.client).hexists(jobHashKey(job), JOB_FIELDS.outcome)) === 0) {
        return deny(`job ${params.jobId} has no outcome yet (the stalled sweeper writes it): removing it would lose it`);
      }
      if (state !== undefined && state !== 'failed') return deny(`job ${params.jobId} is ${state}: removing it would lose it`);
    }
  };
}

/**
 * Serves bull-board at {@link QUEUE_BOARD_PATH}: each partition's delivery queue, and its dead
 * letters through a read-only adapter of our own (they are not a BullMQ queue). With several
 * partitions (QUEUE_PARTITIONS), each pair is grouped under `partition-<n>:`.
 */
export async function registerQueueBoard(app: FastifyInstance, ctx: RelayContext): Promise<void> {
  const partitioned = ctx.queues.partitions.length > 1;
  const deliveries = new Map<string, Queue>();
  const adapters = ctx.queues.partitions.flatMap(({ queue, keys }) => {
    const group = partitioned ? { prefix: `partition-${keys.index}:`, delimiter: ':' } : {};
    const suffix = partitioned ? ` (partition ${keys.index})` : '';
    const options = {
      ...group,
      displayName: `Deliveries${suffix}`,
      description: 'Jobs waiting, delayed, in flight and finished. A finished job marked "dead" is also in the dead letters.',
      // Hides the retry button of completed jobs (guardDeliveries refuses the call); BaseAdapter reads
      // it, although BullMQAdapter's option type leaves it out.
      allowCompletedRetries: false,
    };
    const delivery = new BullMQAdapter(queue, options);
    // BullMQ sees a dead job as completed: say so in the list.
    delivery.setFormatter('name', (job: { name: string; returnvalue?: JobOutcome | null }) =>
      job.returnvalue?.outcome === 'dead' ? `${job.name} (dead: ${job.returnvalue.reason ?? 'unknown'})` : job.name,
    );
    deliveries.set(delivery.getName(), queue);
    return [delivery, new DlqBoardAdapter(ctx.redis, keys, { ...group, displayName: `Dead letters${suffix}` })];
  });

  const serverAdapter = new FastifyAdapter();
  serverAdapter.setBasePath(QUEUE_BOARD_PATH);
  createBullBoard({
    queues: adapters,
    serverAdapter,
    options: {
      uiConfig: {
        boardTitle: 'action-relay',
        miscLinks: [{ text: 'API docs', url: '/docs' }],
      },
      handlerHooks: { before: guardDeliveries(deliveries) },
    },
  });
  await app.register(serverAdapter.registerPlugin(), { prefix: QUEUE_BOARD_PATH });
}
