import type { Queue } from 'bullmq';
import type { Logger } from 'pino';
import { Registry } from 'prom-client';
import { hashTaggedPrefix, type Config } from '../config/config.js';
import { createRedisConnection, relayKeys, type RedisClient, type RelayKeys } from '../redis/redis-connection.js';
import { createActionStore, type ActionStore } from '../actions/action-store.js';
import { createDeliveryQueues, type DeliveryQueues, type QueuePartition } from '../queue/delivery-queue.js';
import { createProducer, type Producer } from '../queue/producer.js';
import { createOutcomeWriter, type OutcomeWriter } from '../queue/outcome-writer.js';
import { settleStartup } from '../queue/bullmq-internals.js';
import { createOrdering, type Ordering } from '../queue/ordering.js';
import { createRelayMetrics, type RelayMetrics } from '../metrics/relay-metrics.js';
import { createScrapeReader } from '../metrics/scrape-reader.js';
import { instrumentProducer } from '../metrics/instrumented-producer.js';
import { createSecretResolver, type SecretResolver } from '../delivery/secret-resolver.js';
import {
  createEgressGuard,
  destinationProblems,
  SAVE_LOOKUP_TIMEOUT_MS,
  type EgressGuard,
  type EgressLookup,
} from '../delivery/egress-guard.js';
import { secretReferenceProblems } from '../actions/secret-references.js';
import type { ActionDefinition } from '../actions/action-schema.js';
import { createLogger } from '../logger.js';
import { USER_AGENT, VERSION } from '../version.js';
import type { Tracing } from '../telemetry/tracing.js';
import { startTracing } from '../telemetry/start-tracing.js';
import { createDeadLetters, type DeadLetters } from '../queue/dead-letters.js';
import { createTokenProvider, type TokenProvider } from '../delivery/token-provider.js';
import type { HttpSender } from '../delivery/http-sender.js';
import { safely } from '../metrics/relay-metrics.js';
import { coerceError } from '../errors/errors.js';

/** Everything a process shares, built once at start and passed down. */
export interface RelayContext {
  config: Config;
  logger: Logger;
  keys: RelayKeys;
  /** Commands. */
  redis: RedisClient;
  /** BullMQ's connection (maxRetriesPerRequest: null). */
  bullConnection: RedisClient;
  store: ActionStore;
  /** The delivery queue of every partition (QUEUE_PARTITIONS). */
  queues: DeliveryQueues;
  /** Partition 0's queue: the only one when QUEUE_PARTITIONS is 1. */
  queue: Queue;
  producer: Producer;
  outcomes: OutcomeWriter;
  /** Lines of jobs with an orderingKey; worker processes run its sweep. */
  ordering: Ordering;
  secrets: SecretResolver;
  /** The egress policy (EGRESS_ALLOW_PRIVATE, EGRESS_ALLOW_HOSTS): of every connection, and of actions being saved. */
  egress: EgressGuard;
  metrics: RelayMetrics;
  deadLetters: DeadLetters;
  /** Spans over OTLP when the OTel variables set an endpoint, else a no-op that passes traceparents on. */
  tracing: Tracing;
  /** Closes the queues and connections gracefully (QUIT): waits for Redis. */
  close(): Promise<void>;
  /** Drops every connection at once, without waiting for Redis (a shutdown past its deadline). */
  disconnect(): void;
}

export interface RelayContextOptions {
  logger?: Logger;
  /** Subscribe to action changes (long-running processes). @defaultValue false */
  watchActions?: boolean;
  /**
   * Wait for the change subscription before returning. A process that must open its listeners
   * while Redis is down passes false: the subscription is made whenever Redis answers. @defaultValue true
   */
  waitForRedis?: boolean;
  /** Register process metrics. @defaultValue true */
  processMetrics?: boolean;
  env?: NodeJS.ProcessEnv;
  /** The egress guard's DNS lookup; tests inject one so that no DNS server is asked. @defaultValue dns.lookup */
  lookup?: EgressLookup;
  /** Tracing of this process; by default started from the OTel variables of process.env (and shut down by close). */
  tracing?: Tracing;
  /** `service.name` of its spans when OTEL_SERVICE_NAME is unset. @defaultValue 'action-relay' */
  serviceName?: string;
}

export async function createRelayContext(config: Config, opts: RelayContextOptions = {}): Promise<RelayContext> {
  const logger = opts.logger ?? createLogger(config.LOG_LEVEL);
  const tracing = opts.tracing ?? (await startTracing({ serviceName: opts.serviceName ?? 'action-relay', serviceVersion: VERSION }));
  const egress = createEgressGuard({
    allowPrivate: config.EGRESS_ALLOW_PRIVATE,
    allowHosts: config.EGRESS_ALLOW_HOSTS,
    lookup: opts.lookup,
  });
  const keys = relayKeys(hashTaggedPrefix(config.ACTION_RELAY_PREFIX), config.QUEUE_PARTITIONS);
  const redis = createRedisConnection(config, { name: 'action-relay' });
  const bullConnection = createRedisConnection(config, { forBullmq: true, name: 'action-relay-bull' });
  const subscriber = opts.watchActions ? createRedisConnection(config, { name: 'action-relay-sub' }) : undefined;
  for (const c of [redis, bullConnection, subscriber]) {
    c?.on('error', (err: Error) => logger.warn({ err: err.message }, 'redis connection error'));
  }
  const secretPolicy = { envPrefix: config.SECRETS_ENV_PREFIX, dir: config.SECRETS_DIR };
  const vet = async (def: ActionDefinition) => [
    ...(await secretReferenceProblems(def, secretPolicy)),
    ...(await destinationProblems(def, egress, SAVE_LOOKUP_TIMEOUT_MS, (refused) =>
      logger.warn(refused, 'action refused by the egress policy'),
    )),
  ];
  const store = createActionStore({ redis, keys, userAgent: USER_AGENT, logger, vet });
  if (subscriber) {
    if (opts.waitForRedis ?? true) await store.watch(subscriber);
    else {
      // Subscribed once connected: a SUBSCRIBE queued while Redis is down could fail for good.
      const watch = () =>
        store.watch(subscriber).catch((err: unknown) => logger.warn({ err: String(err) }, 'action change subscription failed'));
      if (subscriber.status === 'ready') void watch();
      else subscriber.once('ready', () => void watch());
    }
  }
  const queues = createDeliveryQueues({
    connection: bullConnection,
    keys,
    retentionSeconds: config.JOB_RETENTION_SECONDS,
    telemetry: tracing.queueTelemetry,
  });
  for (const p of queues.partitions) p.queue.on('error', (err: Error) => logger.warn({ err: err.message }, 'queue error'));
  const ordering = createOrdering({ redis, queues, logger });
  const producer = createProducer({
    queues,
    store,
    ordering,
    idempotencyTtlMs: config.IDEMPOTENCY_TTL_SECONDS * 1000,
    maxJobBytes: config.JOB_MAX_BYTES,
    tracing,
  });
  const outcomes = createOutcomeWriter(redis, config.RESULTS_MAXLEN, {
    ordering,
    onHandoffError: (err, next) =>
      logger.warn({ jobId: next.jobId, err: coerceError(err).message }, 'adding the next ordered job failed; the ordering sweep adds it'),
  });
  const secrets = createSecretResolver({ ...(opts.env ? { env: opts.env } : {}), ...secretPolicy });
  const metrics = createRelayMetrics(new Registry(), {
    defaults: opts.processMetrics ?? true,
    scrape: createScrapeReader({ redis, queues, keys, store }),
    resultsMaxLen: config.RESULTS_MAXLEN,
  });

  return {
    config,
    logger,
    keys,
    redis,
    bullConnection,
    store,
    queues,
    queue: (queues.partitions[0] as QueuePartition).queue,
    producer: instrumentProducer(producer, metrics),
    outcomes,
    ordering,
    secrets,
    egress,
    metrics,
    deadLetters: createDeadLetters({
      redis,
      queues,
      // A replayed job's id still answers replayedAs as long as its dead letter could have been kept.
      replayPointerTtlSeconds: Math.ceil(config.DLQ_MAX_AGE_DAYS * 86_400),
      // A replay goes where new jobs of its action go; an action gone or broken dies in partition 0.
      route: async (actionId) => {
        const action = await store.getCompiled(actionId).catch(() => null);
        return action ? queues.forLimitKey(action.limitKey) : (queues.partitions[0] as QueuePartition);
      },
    }),
    tracing,
    async close() {
      await settleStartup(
        queues.partitions.map((p) => p.queue),
        bullConnection,
      );
      await queues.close();
      await Promise.all([redis, bullConnection, subscriber].map((c) => c?.quit().catch(() => undefined)));
      // Exports the spans still buffered; a tracing handed in belongs to the caller.
      if (!opts.tracing)
        await tracing.shutdown().catch((err: unknown) => logger.warn({ err: String(err) }, 'trace export at close failed'));
    },
    disconnect() {
      for (const c of [redis, bullConnection, subscriber]) c?.disconnect();
    },
  };
}

/** The token provider of a process: tokens shared through Redis, requests sent by `sender`, counted in metrics. */
export function createContextTokens(ctx: RelayContext, sender: HttpSender): TokenProvider {
  return createTokenProvider({
    redis: ctx.redis,
    keys: ctx.keys,
    sender,
    secrets: ctx.secrets,
    logger: ctx.logger,
    userAgent: USER_AGENT,
    onFetch: (action, ok) => safely(() => ctx.metrics.tokenRefreshes.inc({ action, outcome: ok ? 'ok' : 'error' })),
  });
}
