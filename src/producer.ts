/*
 * `action-relay/producer`: the journey engine's side of the relay, and nothing else. It loads what
 * enqueueing and reading results need (bullmq, ioredis, zod) and none of the api's or worker's
 * modules (fastify, bull-board, swagger, pino, prom-client, undici); a test holds it to that.
 */
import { envSchema, hashTaggedPrefix } from './config/config.js';
import { createRedisConnection, relayKeys, type RedisClient } from './redis/redis-connection.js';
import { createActionStore } from './actions/action-store.js';
import { createDeliveryQueues } from './queue/delivery-queue.js';
import { createProducer as createQueueProducer, type Producer } from './queue/producer.js';
import { createOrdering } from './queue/ordering.js';
import {
  createResultsReader,
  type ReadResultsOptions,
  type ResultsGroup,
  type ResultsGroupOptions,
  type ResultsRead,
} from './queue/results-reader.js';
import { USER_AGENT } from './version.js';

export type { EnqueueResult, EnqueueManyItem, Producer } from './queue/producer.js';
export { MAX_BATCH } from './queue/producer.js';
export { jobInputSchema, type JobInput } from './queue/job-schema.js';
export {
  resultEntrySchema,
  type ResultEntry,
  type MalformedResultEntry,
  type ResultBatch,
  type ResultsCursor,
  type ReadResultsOptions,
  type ResultsRead,
  type ResultsGroup,
  type ResultsGroupOptions,
  type ResultsGroupReadOptions,
} from './queue/results-reader.js';
export { ValidationError, type FieldProblem } from './errors/errors.js';

/** Where the relay lives. Each option left out is read from the same variable the api and worker read. */
export interface ProducerOptions {
  /** @defaultValue REDIS_URL, else `redis://127.0.0.1:6379` */
  redisUrl?: string;
  /** host:port of Redis Cluster nodes; selects Cluster instead of `redisUrl`. @defaultValue REDIS_CLUSTER_NODES */
  clusterNodes?: string[];
  /**
   * host:port of Redis Sentinels: the master is found through them and followed across failovers
   * (its credentials and database still come from `redisUrl`). @defaultValue REDIS_SENTINELS
   */
  sentinels?: string[];
  /** The master name the sentinels monitor. @defaultValue REDIS_SENTINEL_MASTER, else `mymaster` */
  sentinelMaster?: string;
  /** @defaultValue ACTION_RELAY_PREFIX, else `action-relay` */
  prefix?: string;
  /** Must equal the deployment's QUEUE_PARTITIONS. @defaultValue QUEUE_PARTITIONS, else 1 */
  partitions?: number;
  /** @defaultValue IDEMPOTENCY_TTL_SECONDS × 1000, else one day */
  idempotencyTtlMs?: number;
  /** @defaultValue JOB_MAX_BYTES, else 262144 */
  maxJobBytes?: number;
  /** How long a finished job stays readable (set on each job as it is added). @defaultValue JOB_RETENTION_SECONDS, else one day */
  retentionSeconds?: number;
  /**
   * Follow action changes (one more Redis connection, subscribed), so that a job is validated
   * against an action's current definition. Off: definitions are read once and kept. @defaultValue true
   */
  watchActions?: boolean;
  /** Where connection troubles are reported. @defaultValue a line on stderr */
  onWarning?: (message: string, err: unknown) => void;
  /** Variables the defaults come from. @defaultValue process.env */
  env?: NodeJS.ProcessEnv;
}

export interface RelayProducer extends Producer {
  /**
   * Reads the results stream (every partition) from a cursor: XREAD. Keep the returned `cursor`
   * and pass it back as `after`. Every read of this producer (groups too) goes through one
   * connection of its own, apart from the enqueues': a blocking read (`blockMs`) holds up the
   * others until it returns, so each concurrent blocking reader wants a producer of its own.
   */
  readResults(opts?: ReadResultsOptions): Promise<ResultsRead>;
  /**
   * A consumer group on the results stream (XREADGROUP / XACK), created when missing: several
   * instances of the journey engine then share the entries, each acknowledged once handled.
   */
  resultsGroup(group: string, consumer: string, opts?: ResultsGroupOptions): Promise<ResultsGroup>;
  /** Closes every connection it opened. */
  close(): Promise<void>;
}

/** The variables the producer shares with the api and worker, checked by the same schema. */
const producerEnvSchema = envSchema.pick({
  REDIS_URL: true,
  REDIS_CLUSTER_NODES: true,
  REDIS_SENTINELS: true,
  REDIS_SENTINEL_MASTER: true,
  ACTION_RELAY_PREFIX: true,
  QUEUE_PARTITIONS: true,
  IDEMPOTENCY_TTL_SECONDS: true,
  JOB_MAX_BYTES: true,
  JOB_RETENTION_SECONDS: true,
});

function settings(opts: ProducerOptions) {
  const env = opts.env ?? process.env;
  const input: Record<string, string> = {};
  for (const key of Object.keys(producerEnvSchema.shape)) {
    const value = env[key];
    if (value !== undefined && value !== '') input[key] = value;
  }
  if (opts.redisUrl !== undefined) input.REDIS_URL = opts.redisUrl;
  if (opts.clusterNodes !== undefined) input.REDIS_CLUSTER_NODES = opts.clusterNodes.join(',');
  if (opts.sentinels !== undefined) input.REDIS_SENTINELS = opts.sentinels.join(',');
  if (opts.sentinelMaster !== undefined) input.REDIS_SENTINEL_MASTER = opts.sentinelMaster;
  if (opts.prefix !== undefined) input.ACTION_RELAY_PREFIX = opts.prefix;
  if (opts.partitions !== undefined) input.QUEUE_PARTITIONS = String(opts.partitions);
  if (opts.maxJobBytes !== undefined) input.JOB_MAX_BYTES = String(opts.maxJobBytes);
  if (opts.retentionSeconds !== undefined) input.JOB_RETENTION_SECONDS = String(opts.retentionSeconds);
  const parsed = producerEnvSchema.safeParse(input);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new RangeError(`invalid producer settings: ${lines.join('; ')}`);
  }
  if (parsed.data.REDIS_SENTINELS?.length && parsed.data.REDIS_CLUSTER_NODES?.length) {
    throw new RangeError('invalid producer settings: REDIS_SENTINELS and REDIS_CLUSTER_NODES exclude each other: set one');
  }
  return parsed.data;
}

/** Connects to the relay's Redis. Call `close()` when done. */
export async function createProducer(opts: ProducerOptions = {}): Promise<RelayProducer> {
  const config = settings(opts);
  const warn = opts.onWarning ?? ((message: string, err: unknown) => console.warn(`action-relay producer: ${message}`, err));
  const keys = relayKeys(hashTaggedPrefix(config.ACTION_RELAY_PREFIX), config.QUEUE_PARTITIONS);
  // One connection for the queue and the action reads (BullMQ wants maxRetriesPerRequest: null).
  const redis = createRedisConnection(config, { forBullmq: true, name: 'action-relay-producer' });
  const subscriber = opts.watchActions === false ? undefined : createRedisConnection(config, { name: 'action-relay-producer-sub' });
  let reader: RedisClient | undefined;
  const connections = () => [redis, subscriber, reader];
  for (const c of connections()) c?.on('error', (err: unknown) => warn('redis connection error', err));

  const store = createActionStore({
    redis,
    keys,
    userAgent: USER_AGENT,
    logger: { warn: (detail: unknown, message?: string) => warn(message ?? 'action store', detail) },
  });
  if (subscriber) await store.watch(subscriber);
  const queues = createDeliveryQueues({ connection: redis, keys, retentionSeconds: config.JOB_RETENTION_SECONDS });
  for (const p of queues.partitions) p.queue.on('error', (err: unknown) => warn('queue error', err));
  const producer = createQueueProducer({
    queues,
    store,
    ordering: createOrdering({ redis, queues }),
    idempotencyTtlMs: opts.idempotencyTtlMs ?? config.IDEMPOTENCY_TTL_SECONDS * 1000,
    maxJobBytes: config.JOB_MAX_BYTES,
  });

  const resultsReader = () => {
    if (!reader) {
      reader = createRedisConnection(config, { name: 'action-relay-results' });
      reader.on('error', (err: unknown) => warn('redis connection error', err));
    }
    return createResultsReader(reader, keys.partitions);
  };

  return {
    enqueue: (input) => producer.enqueue(input),
    enqueueMany: (inputs) => producer.enqueueMany(inputs),
    readResults: (readOpts) => resultsReader().read(readOpts),
    resultsGroup: (group, consumer, groupOpts) => resultsReader().group(group, consumer, groupOpts),
    async close() {
      await queues.close();
      await Promise.all(connections().map((c) => c?.quit().catch(() => undefined)));
    },
  };
}
