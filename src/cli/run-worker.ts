import type { Server } from 'node:http';
import type { Config } from '../config/config.js';
import { createRelayContext, type RelayContext } from '../context/relay-context.js';
import { createDeliveryWorker, type DeliveryWorker } from '../delivery/delivery-worker.js';
import { createHttpSender } from '../delivery/http-sender.js';
import { startMetricsServer } from '../metrics/metrics-server.js';

export interface RunningWorker {
  ctx: RelayContext;
  delivery: DeliveryWorker;
  metricsServer: Server | undefined;
  stop(): Promise<void>;
}

/** Starts delivery workers and the metrics listener of `action-relay worker`. */
export async function runWorker(config: Config, ctx?: RelayContext): Promise<RunningWorker> {
  const context = ctx ?? (await createRelayContext(config, { watchActions: true }));
  const sender = createHttpSender();
  let stopping = false;
  const delivery = createDeliveryWorker({
    connection: context.bullConnection,
    keys: context.keys,
    store: context.store,
    sender,
    secrets: context.secrets,
    outcomes: context.outcomes,
    metrics: context.metrics,
    logger: context.logger,
    concurrency: config.WORKER_CONCURRENCY,
    maxResponseBytes: config.RESPONSE_MAX_BYTES,
  });
  const metricsServer =
    config.METRICS_PORT > 0 ? await startMetricsServer(context.metrics.registry, config.METRICS_PORT, config.HOST, () => !stopping) : undefined;
  context.logger.info({ concurrency: config.WORKER_CONCURRENCY, metricsPort: config.METRICS_PORT }, 'worker started');
  return {
    ctx: context,
    delivery,
    metricsServer,
    async stop() {
      stopping = true;
      await delivery.close();
      await sender.close();
      await new Promise<void>((r) => (metricsServer ? metricsServer.close(() => r()) : r()));
      if (!ctx) await context.close();
    },
  };
}
