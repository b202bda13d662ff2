import type { Job, Worker } from 'bullmq';
import type { Logger } from 'pino';
import { coerceError } from '../errors/errors.js';
import { safely, type RelayMetrics } from '../metrics/relay-metrics.js';
import type { PartitionKeys, RedisClient } from '../redis/redis-connection.js';
import type { DeliveryQueues, QueuePartition } from './delivery-queue.js';
import { orderingKeyOf, readJobData } from './job-schema.js';
import type { AttemptRecord, OutcomeWriter } from './outcome-writer.js';

/**
 * The processor ends every job it runs (delivered or dead, one results entry). The jobs BullMQ
 * fails by itself never reach it: a job whose lock was lost more than `maxStalledCount` times
 * (its worker killed or cut off from Redis each time) lands in BullMQ's failed set. This module
 * ends those: dead-lettered with reason `stalled`, through the same exactly-once finish as the
 * processor, so the journey engine is never left waiting.
 */
export interface StalledSweeper {
  /** Ends one job of the failed set that has no outcome yet; false when it was not failed or had one. */
  endFailed(partition: QueuePartition, jobId: string): Promise<boolean>;
  /** Ends the jobs failed since the last sweep (the whole failed set the first time); returns how many. */
  sweep(): Promise<number>;
  /** Ends each job a worker fails at once, and sweeps every `intervalMs` for any a crash left behind. */
  start(workers: readonly Worker[], intervalMs?: number): void;
  stop(): void;
}

export interface StalledSweeperDeps {
  queues: DeliveryQueues;
  redis: RedisClient;
  outcomes: OutcomeWriter;
  metrics: RelayMetrics;
  logger: Logger;
  now?: () => number;
}

/** A sweep looks back this far before the previous one: workers' clocks (finishedOn) may differ a little. */
const OVERLAP_MS = 5 * 60_000;
const PAGE = 200;
/** Field of the job hash that the finish script sets (outcome-writer). */
const OUTCOME_FIELD = 'arOutcome';

export function createStalledSweeper(deps: StalledSweeperDeps): StalledSweeper {
  const now = deps.now ?? Date.now;
  const { redis, outcomes, metrics, logger } = deps;
  /** Per partition: failed jobs with a finishedOn at or after this were not yet swept. */
  const sweptUpTo = new Map<number, number>();
  let timer: NodeJS.Timeout | undefined;
  const detach: (() => void)[] = [];

  const failedKey = (p: QueuePartition) => p.queue.keys.failed as string;

  async function endJob(keys: PartitionKeys, job: Job): Promise<boolean> {
    const jobId = job.id as string;
    const parsed = readJobData(job.data);
    const orderingKey = orderingKeyOf(job.data);
    // Malformed data still names its line, which must move on.
    const data = parsed.ok ? parsed.value : { params: {}, context: {}, ...(orderingKey !== undefined ? { orderingKey } : {}) };
    const failedAtMs = job.finishedOn ?? now();
    const startedAt = job.processedOn ?? failedAtMs;
    const stall: AttemptRecord = {
      attempt: job.attemptsMade + 1,
      startedAt: new Date(startedAt).toISOString(),
      durationMs: Math.max(0, failedAtMs - startedAt),
      request: { method: '', url: '', headers: {} },
      error: { code: 'stalled', message: job.failedReason || 'job stalled more than allowable limit' },
    };
    const history = [...(await outcomes.attemptsOf(keys, jobId, job.attemptsMade)), stall];
    const failedAt = new Date(failedAtMs).toISOString();
    const written = await outcomes.finish(keys, {
      jobId,
      actionId: job.name,
      outcome: 'dead',
      status: null,
      reason: 'stalled',
      attempts: history.length,
      durationMs: Math.max(0, failedAtMs - job.timestamp),
      context: data.context,
      response: {},
      // A stalled job ends its line's turn like any dead job: the next one goes.
      ...(data.orderingKey !== undefined ? { orderingKey: data.orderingKey } : {}),
      dead: {
        jobId,
        actionId: job.name,
        job: {
          actionId: job.name,
          params: data.params,
          context: data.context,
          ...(data.idempotencyKey !== undefined ? { idempotencyKey: data.idempotencyKey } : {}),
          ...(data.replayOf !== undefined ? { replayOf: data.replayOf } : {}),
          ...(data.orderingKey !== undefined ? { orderingKey: data.orderingKey } : {}),
          enqueuedAt: new Date(job.timestamp).toISOString(),
        },
        reason: 'stalled',
        status: null,
        failedAt,
        attempts: history,
      },
    });
    if (written) {
      safely(() => metrics.jobs.inc({ action: job.name, outcome: 'dead' }));
      safely(() => metrics.deadLetters.inc({ action: job.name, reason: 'stalled' }));
      logger.warn(
        { jobId, actionId: job.name, reason: 'stalled', failedReason: job.failedReason, outcome: 'dead' },
        'stalled job dead-lettered',
      );
    }
    return written;
  }

  async function endFailed(partition: QueuePartition, jobId: string): Promise<boolean> {
    // Only a job in the failed set: BullMQ emits 'failed' for retried attempts too.
    if ((await redis.zscore(failedKey(partition), jobId)) === null) return false;
    if ((await redis.hget(partition.keys.jobKey(jobId), OUTCOME_FIELD)) !== null) return false;
    const job = await partition.queue.getJob(jobId);
    if (!job) return false;
    return endJob(partition.keys, job);
  }

  async function sweepPartition(partition: QueuePartition): Promise<number> {
    const startedAt = now();
    const since = sweptUpTo.get(partition.keys.index) ?? 0;
    let ended = 0;
    for (let offset = 0; ; offset += PAGE) {
      const ids = await redis.zrangebyscore(failedKey(partition), since, '+inf', 'LIMIT', offset, PAGE);
      if (ids.length === 0) break;
      const marks = await Promise.all(ids.map((id) => redis.hget(partition.keys.jobKey(id), OUTCOME_FIELD)));
      for (const [i, id] of ids.entries()) {
        if (marks[i] === null && (await endFailed(partition, id))) ended += 1;
      }
      if (ids.length < PAGE) break;
    }
    sweptUpTo.set(partition.keys.index, startedAt - OVERLAP_MS);
    return ended;
  }

  const sweeper: StalledSweeper = {
    endFailed,
    async sweep() {
      let ended = 0;
      for (const p of deps.queues.partitions) ended += await sweepPartition(p);
      return ended;
    },
    start(workers, intervalMs = 60_000) {
      workers.forEach((worker, i) => {
        const partition = deps.queues.partitions[i];
        if (!partition) return;
        // BullMQ fails a job that stalled too often with an UnrecoverableError when a worker next
        // takes it; every other 'failed' event is a retried attempt, not worth a Redis call.
        const onFailed = (job: Job | undefined, err: Error) => {
          if (!job?.id || err.name !== 'UnrecoverableError') return;
          endFailed(partition, job.id).catch((err: unknown) =>
            logger.warn({ jobId: job.id, err: coerceError(err).message }, 'ending a failed job failed; the next sweep retries'),
          );
        };
        worker.on('failed', onFailed);
        detach.push(() => worker.off('failed', onFailed));
      });
      const run = () =>
        void sweeper.sweep().catch((err: unknown) => logger.warn({ err: coerceError(err).message }, 'stalled-job sweep failed'));
      run();
      timer = setInterval(run, intervalMs);
      timer.unref();
    },
    stop() {
      clearInterval(timer);
      for (const off of detach.splice(0)) off();
    },
  };
  return sweeper;
}
