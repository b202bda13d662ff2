import type { Queue } from 'bullmq';
import type { Logger } from 'pino';
import { Registry } from 'prom-client';
import { hashTaggedPrefix, type Config } from '../config/config.js';
import { createRedisConnection, relayKeys, type RedisClient, type RelayKeys } from '../redis/redis-connection.js';
import { createActionStore, type ActionStore } from '../actions/action-store.js';
import { createDeliveryQueue } from '../queue/delivery-queue.js';
import { createProducer, type Producer } from '../queue/producer.js';
import { createOutcomeWriter, type OutcomeWriter } from '../queue/outcome-writer.js';
import { createRelayMetrics, type RelayMetrics } from '../metrics/relay-metrics.js';
import { createOldestWaitingProbe } from '../metrics/oldest-waiting.js';
import { createSecretResolver, type SecretResolver } from '../delivery/secret-resolver.js';
import { createLogger } from '../logger.js';
import { USER_AGENT } from '../version.js';
import { loadActionFiles } from '../actions/action-files.js';
import { createDeadLetters, type DeadLetters } from '../queue/dead-letters.js';
import { createTokenProvider, type TokenProvider } from '../delivery/token-provider.js';
import type { HttpSender } from '../delivery/http-sender.js';
import { safely } from '../metrics/relay-metrics.js';

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
  queue: Queue;
  producer: Producer;
  outcomes: OutcomeWriter;
  secrets: SecretResolver;
  metrics: RelayMetrics;
  deadLetters: DeadLetters;
  close(): Promise<void>;
}

export interface RelayContextOptions {
  logger?: Logger;
  /** Subscribe to action changes (long-running processes). @defaultValue false */
  watchActions?: boolean;
  /** Register process metrics. @defaultValue true */
  processMetrics?: boolean;
  env?: NodeJS.ProcessEnv;
}

export async function createRelayContext(config: Config, opts: RelayContextOptions = {}): Promise<RelayContext> {
  const logger = opts.logger ?? createLogger(config.LOG_LEVEL);
  const keys = relayKeys(hashTaggedPrefix(config.ACTION_RELAY_PREFIX));
  const redis = createRedisConnection(config, { name: 'action-relay' });
  const bullConnection = createRedisConnection(config, { forBullmq: true, name: 'action-relay-bull' });
  const subscriber = opts.watchActions ? createRedisConnection(config, { name: 'action-relay-sub' }) : undefined;
  for (const c of [redis, bullConnection, subscriber]) {
    c?.on('error', (err: Error) => logger.warn({ err: err.message }, 'redis connection error'));
  }
  const store = createActionStore({ redis, keys, userAgent: USER_AGENT, logger });
  if (subscriber) await store.watch(subscriber);
  const queue = createDeliveryQueue({ connection: bullConnection, keys, retentionSeconds: config.JOB_RETENTION_SECONDS });
  queue.on('error', (err: Error) => logger.warn({ err: err.message }, 'queue error'));
  const producer = createProducer({ queue, store, idempotencyTtlMs: config.IDEMPOTENCY_TTL_SECONDS * 1000 });
  const outcomes = createOutcomeWriter(redis, keys, config.RESULTS_MAXLEN);
  const secrets = createSecretResolver(opts.env ? { env: opts.env } : {});
  const metrics = createRelayMetrics(new Registry(), {
    defaults: opts.processMetrics ?? true,
    queueCounts: async () => {
      const [counts, dlq] = await Promise.all([queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized'), redis.zcard(keys.dlq)]);
      return {
        waiting: (counts.waiting ?? 0) + (counts.prioritized ?? 0),
        active: counts.active ?? 0,
        delayed: counts.delayed ?? 0,
        dlq,
      };
    },
    oldestWaitingSeconds: createOldestWaitingProbe(redis, keys),
  });

  if (config.ACTIONS_DIR) {
    const applied = await loadActionFiles(config.ACTIONS_DIR);
    for (const file of applied) {
      const saved = await store.put(file.definition);
      logger.info({ actionId: saved.id, version: saved.version, file: file.path }, 'action applied from ACTIONS_DIR');
    }
  }

  return {
    config,
    logger,
    keys,
    redis,
    bullConnection,
    store,
    queue,
    producer,
    outcomes,
    secrets,
    metrics,
    deadLetters: createDeadLetters(redis, keys, queue),
    async close() {
      await queue.close();
      await Promise.all([redis, bullConnection, subscriber].map((c) => c?.quit().catch(() => undefined)));
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
