import type { Server } from 'node:http';
import type { Config } from '../config/config.js';
import { createContextTokens, createRelayContext, type RelayContext } from '../context/relay-context.js';
import { createDeliveryWorker, type DeliveryWorker } from '../delivery/delivery-worker.js';
import { createHttpSender } from '../delivery/http-sender.js';
import { startMetricsServer } from '../metrics/metrics-server.js';
import { createRateLimiter } from '../delivery/rate-limiter.js';
import { createCircuitBreaker } from '../delivery/circuit-breaker.js';

export interface RunningWorker {
  ctx: RelayContext;
  delivery: DeliveryWorker;
  metricsServer: Server | undefined;
  stop(): Promise<void>;
}

/** Starts delivery workers and the metrics listener of `action-relay worker`. */
export async function runWorker(config: Config, ctx?: RelayContext): Promise<RunningWorker> {
  const context = ctx ?? (await createRelayContext(config, { watchActions: true }));
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
    concurrency: config.WORKER_CONCURRENCY,
    maxResponseBytes: config.RESPONSE_MAX_BYTES,
    lockDurationMs: config.JOB_LOCK_MS,
    requestTimeoutCapMs: config.REQUEST_TIMEOUT_CAP_MS,
  });
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
      ? await startMetricsServer(context.metrics.registry, config.METRICS_PORT, config.HOST, () => !stopping)
      : undefined;
  context.logger.info(
    { concurrency: config.WORKER_CONCURRENCY, partitions: config.QUEUE_PARTITIONS, metricsPort: config.METRICS_PORT },
    'worker started',
  );
  return {
    ctx: context,
    delivery,
    metricsServer,
    async stop() {
      stopping = true;
      clearInterval(trimTimer);
      context.ordering.stop();
      // Finish in-flight requests within the grace period; past it, jobs still active are left
      // locked and another worker takes them over when the lock expires.
      let timer: NodeJS.Timeout | undefined;
      const graceOver = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), config.SHUTDOWN_GRACE_MS)));
      const outcome = await Promise.race([delivery.close().then(() => 'closed' as const), graceOver]);
      clearTimeout(timer);
      if (outcome === 'timeout') {
        context.logger.warn({ graceMs: config.SHUTDOWN_GRACE_MS }, 'grace period over: leaving in-flight jobs to be taken over');
        await delivery.close(true);
      }
      await sender.close();
      await new Promise<void>((r) => (metricsServer ? metricsServer.close(() => r()) : r()));
      if (!ctx) await context.close();
    },
  };
}
