import type { Server } from 'node:http';
import type { Worker } from 'bullmq';
import type { Config } from '../config/config.js';
import { createContextTokens, createRelayContext, type RelayContext } from '../context/relay-context.js';
import { createDeliveryWorker, type DeliveryWorker } from '../delivery/delivery-worker.js';
import { createHttpSender } from '../delivery/http-sender.js';
import { startMetricsServer } from '../metrics/metrics-server.js';
import { createRateLimiter } from '../delivery/rate-limiter.js';
import { createCircuitBreaker } from '../delivery/circuit-breaker.js';
import { checkRedis } from '../redis/redis-health.js';
import { withDeadline } from './shutdown.js';
import { createStalledSweeper } from '../queue/stalled-sweeper.js';
import { checkEvictionPolicy } from '../redis/eviction-policy.js';
import { whenReady } from '../redis/redis-health.js';

export interface RunningWorker {
  ctx: RelayContext;
  delivery: DeliveryWorker;
  metricsServer: Server | undefined;
  stop(): Promise<void>;
  /** Rejects when Redis turns out to be set up to lose jobs (an evicting maxmemory-policy): the worker must stop. */
  setupChecked: Promise<void>;
}

/**
 * The ids of the jobs a BullMQ worker holds now. BullMQ keeps them in its lock manager (bullmq 5,
 * `Worker.lockManager.trackedJobs`, not public API): read here and nowhere else.
 */
function jobsHeld(worker: Worker): string[] {
  const internal = worker as unknown as { lockManager?: { trackedJobs?: Map<string, unknown> } };
  return [...(internal.lockManager?.trackedJobs?.keys() ?? [])];
}

/** Seconds past SHUTDOWN_GRACE_MS that closing connections may take before the process gives up on them. */
const CLOSE_MARGIN_MS = 3000;

/** Starts delivery workers and the metrics listener of `action-relay worker`; nothing here waits for Redis. */
export async function runWorker(config: Config, ctx?: RelayContext): Promise<RunningWorker> {
  const context =
    ctx ?? (await createRelayContext(config, { watchActions: true, waitForRedis: false, serviceName: 'action-relay-worker' }));
  // Refuses to run on a Redis that evicts keys: checked once Redis answers (nothing here waits for it).
  const setupChecked = whenReady(context.redis).then(() => checkEvictionPolicy(context.redis, context.logger));
  setupChecked.catch(() => undefined);
  const sender = createHttpSender({ guard: context.egress });
  let stopping = false;
  const delivery = createDeliveryWorker({
    connection: context.bullConnection,
    keys: context.keys,
    store: context.store,
    sender,
    secrets: context.secrets,
    tokens: createContextTokens(context, sender),
    outcomes: context.outcomes,
    rateLimiter: createRateLimiter(context.redis, context.keys),
    circuitBreaker: createCircuitBreaker(context.redis, context.keys),
    metrics: context.metrics,
    logger: context.logger,
    tracing: context.tracing,
    concurrency: config.WORKER_CONCURRENCY,
    maxResponseBytes: config.RESPONSE_MAX_BYTES,
    lockDurationMs: config.JOB_LOCK_MS,
    maxStalledCount: config.JOB_MAX_STALLS,
    requestTimeoutCapMs: config.REQUEST_TIMEOUT_CAP_MS,
  });
  // Jobs BullMQ fails by itself (stalled too often) are dead-lettered with reason `stalled`.
  const sweeper = createStalledSweeper({
    queues: context.queues,
    redis: context.redis,
    outcomes: context.outcomes,
    metrics: context.metrics,
    logger: context.logger,
  });
  sweeper.start(delivery.workers);
  // Bounded dead-letter store: trimmed by age and count once a minute (cheap when nothing is due).
  const trim = () =>
    context.deadLetters
      .trim(config.DLQ_MAX_AGE_DAYS * 86_400_000, config.DLQ_MAX_COUNT)
      .then((n) => n > 0 && context.logger.info({ removed: n }, 'dead letters past retention removed'))
      .catch((err: unknown) => context.logger.warn({ err: String(err) }, 'dead-letter trim failed'));
  void trim();
  const trimTimer = setInterval(() => void trim(), 60_000);
  trimTimer.unref();
  // Ordered jobs whose turn came while a process died before adding them to the queue.
  context.ordering.start();
  const metricsServer =
    config.METRICS_PORT > 0
      ? await startMetricsServer(context.metrics.registry, config.METRICS_PORT, config.HOST, {
          alive: () => !stopping,
          ready: async () => (stopping ? { ok: false, reason: 'stopping' } : checkRedis(context.redis)),
        })
      : undefined;
  context.logger.info(
    { concurrency: config.WORKER_CONCURRENCY, partitions: config.QUEUE_PARTITIONS, metricsPort: config.METRICS_PORT },
    'worker started',
  );
  return {
    ctx: context,
    delivery,
    metricsServer,
    setupChecked,
    async stop() {
      stopping = true;
      const started = Date.now();
      clearInterval(trimTimer);
      context.ordering.stop();
      sweeper.stop();
      // Finish in-flight requests within the grace period; past it, jobs still active are left
      // locked and another worker takes them over when the lock expires.
      const finished = await withDeadline(delivery.close(), config.SHUTDOWN_GRACE_MS);
      const left = [...new Set(delivery.workers.flatMap(jobsHeld))];
      if (!finished) {
        context.logger.warn(
          { graceMs: config.SHUTDOWN_GRACE_MS, jobs: left.length },
          'grace period over: leaving in-flight jobs to be taken over',
        );
      }
      // With Redis gone, closing a connection can wait for ever: bounded, then the process exits anyway.
      const closed = await withDeadline(
        (async () => {
          if (!finished) await delivery.close(true);
          await sender.close();
          await new Promise<void>((r) => (metricsServer ? metricsServer.close(() => r()) : r()));
          if (!ctx) await context.close();
        })(),
        CLOSE_MARGIN_MS,
      );
      if (!closed && !ctx) context.disconnect();
      metricsServer?.closeAllConnections();
      context.logger.info(
        {
          event: 'stopped',
          durationMs: Date.now() - started,
          graceMs: config.SHUTDOWN_GRACE_MS,
          leftForTakeover: left.length,
          jobIds: left.slice(0, 100),
          redis: context.redis.status,
          takeoverAfterMs: left.length > 0 ? config.JOB_LOCK_MS : 0,
        },
        left.length > 0 ? `worker stopped: ${left.length} job(s) left for takeover when their locks expire` : 'worker stopped: no job left',
      );
    },
  };
}
