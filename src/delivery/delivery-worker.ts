import { Worker, type Job } from 'bullmq';
import type { Logger } from 'pino';
import type { ActionStore } from '../actions/action-store.js';
import { coerceError } from '../errors/errors.js';
import { observeDeliveryMetrics } from '../metrics/delivery-observer.js';
import type { RelayMetrics } from '../metrics/relay-metrics.js';
import { BACKOFF_TYPE } from '../queue/delivery-queue.js';
import type { OutcomeWriter } from '../queue/outcome-writer.js';
import { settleStartup } from '../queue/bullmq-internals.js';
import type { RedisClient, RelayKeys } from '../redis/redis-connection.js';
import { actionLoggers, type PipelineContext } from './attempt/attempt.js';
import { RetryScheduled } from './attempt/finish.js';
import { runAttempt } from './attempt/run-attempt.js';
import type { CircuitBreaker } from './circuit-breaker.js';
import { createDeliveryEvents, type DeliveryEvents } from './delivery-events.js';
import type { HttpSender } from './http-sender.js';
import type { RateLimiter } from './rate-limiter.js';
import type { SecretResolver } from './secret-resolver.js';
import { createSharedConcurrency } from './shared-concurrency.js';
import type { TokenProvider } from './token-provider.js';
import type { Tracing } from '../telemetry/tracing.js';
import { traceAttempts } from './attempt-tracing.js';

export interface DeliveryWorkerDeps {
  /** A connection with maxRetriesPerRequest: null (BullMQ duplicates it for blocking calls). */
  connection: RedisClient;
  keys: RelayKeys;
  store: ActionStore;
  sender: HttpSender;
  secrets: SecretResolver;
  /** Access tokens of oauth2ClientCredentials and customToken actions. */
  tokens?: TokenProvider;
  outcomes: OutcomeWriter;
  /** Per-key rate limits; without it, rateLimit settings are not enforced. */
  rateLimiter?: RateLimiter;
  /** Per-key circuit breakers; without it, circuitBreaker settings are not enforced. */
  circuitBreaker?: CircuitBreaker;
  /** Fed by the pipeline's events (see observeDeliveryMetrics). */
  metrics: RelayMetrics;
  /** The pipeline's events, for more observers (tracing, error capture); one is made when absent. */
  events?: DeliveryEvents;
  logger: Logger;
  /** Spans per attempt and request, traceparent on each request, trace ids in log lines. @defaultValue none */
  tracing?: Tracing;
  /** Jobs in flight in this process, shared by the partitions' workers (see createSharedConcurrency). @defaultValue 64 */
  concurrency?: number;
  /** Most bytes of a 2xx body read to capture response fields. @defaultValue 1 MiB */
  maxResponseBytes?: number;
  /** Milliseconds a job's lock lasts without renewal (renewed every half). @defaultValue 10000 */
  lockDurationMs?: number;
  /** Times a job may stall (its lock lost) before BullMQ fails it; see stalled-sweeper. @defaultValue 5 */
  maxStalledCount?: number;
  /** Longest request; an action's timeoutMs is clamped to it. @defaultValue 120000 */
  requestTimeoutCapMs?: number;
  now?: () => number;
  random?: () => number;
  autorun?: boolean;
}

export interface DeliveryWorker {
  /** Partition 0's worker: the only one when QUEUE_PARTITIONS is 1. */
  worker: Worker;
  /** One BullMQ worker per partition (keys.partitions), in partition order. */
  workers: Worker[];
  /** The pipeline's events (deps.events when given): subscribe to observe deliveries. */
  events: DeliveryEvents;
  /** Stops taking jobs and waits for the ones in flight; `force` leaves them to be taken over. */
  close(force?: boolean): Promise<void>;
}

/**
 * Creates the BullMQ workers that deliver jobs, one per partition; each job runs the attempt
 * pipeline of `./attempt/` (load, gates, prepare, send, classify, finish).
 */
export function createDeliveryWorker(deps: DeliveryWorkerDeps): DeliveryWorker {
  const lockDuration = deps.lockDurationMs ?? 10_000;
  const timeoutCapMs = deps.requestTimeoutCapMs ?? 120_000;
  const events =
    deps.events ??
    createDeliveryEvents((err, name) => deps.logger.warn({ err: coerceError(err).message, event: name }, 'delivery event listener failed'));
  // One worker per partition in this process; with several, they share the concurrency budget.
  const budget = deps.concurrency ?? 64;
  const unobserve = observeDeliveryMetrics(events, deps.metrics, { concurrency: budget });
  // Wraps the sender, the logger and each attempt: the pipeline's steps know nothing of tracing.
  const traced = traceAttempts(deps);
  const ctx: PipelineContext = {
    connection: deps.connection,
    store: deps.store,
    sender: traced.sender,
    secrets: deps.secrets,
    tokens: deps.tokens,
    outcomes: deps.outcomes,
    rateLimiter: deps.rateLimiter,
    circuitBreaker: deps.circuitBreaker,
    events,
    logger: traced.logger,
    actionLogger: actionLoggers(traced.logger),
    maxResponseBytes: deps.maxResponseBytes ?? 1024 * 1024,
    timeoutCapMs,
    now: deps.now ?? Date.now,
    random: deps.random ?? Math.random,
    pauses: new Map(),
    redact: (s) => deps.secrets.redact(s),
  };

  const partitions = deps.keys.partitions;
  const shared = partitions.length > 1 ? createSharedConcurrency(budget, partitions.length) : undefined;
  const workers = partitions.map((partition) => {
    const processor = traced.wrap((job: Job, token?: string) => runAttempt(ctx, job, partition, token));
    const worker = new Worker(partition.queueName, shared ? shared.track(partition.index, processor) : processor, {
      connection: deps.connection,
      prefix: partition.bullPrefix,
      concurrency: shared ? shared.initial(partition.index) : budget,
      autorun: deps.autorun ?? true,
      // Renewed every half period while the job runs, so the lock need not outlast a request: a
      // killed worker's jobs are moved back to wait by the first stalled check after their lock
      // expires, within lockDuration + stalledInterval of the kill (docs/recovery.md).
      lockDuration,
      stalledInterval: Math.min(30_000, Math.max(1000, Math.floor(lockDuration / 2))),
      maxStalledCount: deps.maxStalledCount ?? 5,
      // After a Redis outage, fetch again within a second rather than BullMQ's default 15 s.
      runRetryDelay: 1000,
      settings: {
        backoffStrategy: (_attemptsMade: number, type?: string, err?: Error) =>
          type === BACKOFF_TYPE && err instanceof RetryScheduled ? err.delayMs : 1000,
      },
    });
    shared?.attach(partition.index, worker);
    worker.on('error', (err: unknown) => deps.logger.error({ err: ctx.redact(coerceError(err).message) }, 'worker error'));
    return worker;
  });

  return {
    worker: workers[0] as Worker,
    workers,
    events,
    close: async (force) => {
      await settleStartup(workers, deps.connection);
      await Promise.all(workers.map((w) => w.close(force)));
      unobserve();
    },
  };
}
