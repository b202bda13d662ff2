import { z } from 'zod';

const port = z.coerce.number().int().min(0).max(65535);
const bool = z.enum(['true', 'false', '1', '0', 'yes', 'no']).transform((v) => v === 'true' || v === '1' || v === 'yes');
const commaList = z.string().transform((v) =>
  v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0),
);

/** Every environment variable action-relay reads, with its default. */
export const envSchema = z.object({
  REDIS_URL: z.string().url().default('redis://127.0.0.1:6379'),
  REDIS_CLUSTER_NODES: commaList.optional(),
  /** Redis Sentinel addresses (host:port, comma list): the master is found through them and followed across failovers. */
  REDIS_SENTINELS: commaList.optional(),
  /** The master name the sentinels monitor. @defaultValue mymaster */
  REDIS_SENTINEL_MASTER: z.string().min(1).default('mymaster'),
  ACTION_RELAY_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_.{}-]{1,64}$/, 'letters, digits, _ . - { } only, at most 64')
    .regex(/^[^{}]*(\{[^{}]+\}[^{}]*)?$/, 'at most one {hash tag}, not empty')
    .default('action-relay'),
  PORT: port.default(8080),
  HOST: z.string().min(1).default('127.0.0.1'),
  METRICS_PORT: port.default(9464),
  /** Jobs in flight per worker process. @defaultValue 64 */
  WORKER_CONCURRENCY: z.coerce.number().int().min(1).max(10000).default(64),
  /** BullMQ queues the jobs are spread over (by rate-limit key), each in its own Redis Cluster slot. @defaultValue 1 */
  QUEUE_PARTITIONS: z.coerce.number().int().min(1).max(128).default(1),
  ACTIONS_DIR: z.string().min(1).optional(),
  ADMIN_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),
  /** A YAML or JSON file of scoped API tokens: `tokens: [{ name, sha256, scopes }]`. */
  API_TOKENS_FILE: z.string().min(1).optional(),
  /** Host names the API answers to in the no-token mode, besides localhost and loopback addresses. */
  API_ALLOWED_HOSTS: commaList.optional(),
  /** What an `{ env: NAME }` secret reference must start with. @defaultValue ACTION_SECRET_ */
  SECRETS_ENV_PREFIX: z
    .string()
    .regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/, 'the start of an environment variable name (letters, digits, _)')
    .default('ACTION_SECRET_'),
  /** The folder `{ file: PATH }` secret references are read from; unset: file references are refused. */
  SECRETS_DIR: z.string().min(1).optional(),
  EGRESS_ALLOW_PRIVATE: bool.default(false),
  EGRESS_ALLOW_HOSTS: commaList.optional(),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Largest response body read, in bytes; the rest is discarded. @defaultValue 1 MiB */
  RESPONSE_MAX_BYTES: z.coerce
    .number()
    .int()
    .min(1024)
    .max(64 * 1024 * 1024)
    .default(1024 * 1024),
  /** Approximate length kept on the results stream. @defaultValue 1000000 */
  RESULTS_MAXLEN: z.coerce.number().int().min(1000).default(1_000_000),
  /** How long a finished job stays readable by GET /v1/jobs/:id, in seconds. @defaultValue 86400 */
  JOB_RETENTION_SECONDS: z.coerce.number().int().min(1).default(86_400),
  /** Longest any request may take: an action's timeoutMs is clamped to it. @defaultValue 120000 */
  REQUEST_TIMEOUT_CAP_MS: z.coerce.number().int().min(100).max(120_000).default(120_000),
  /**
   * How long a worker's lock on a job lasts unrenewed. The worker renews it every half period while
   * the job runs, however long its request takes; a killed worker's jobs are taken over within about
   * 1.5 times this (the lock expires, then the next stalled check). @defaultValue 10000
   */
  JOB_LOCK_MS: z.coerce.number().int().min(1000).max(600_000).default(10_000),
  /** Times a job may be orphaned (its worker killed or cut off) before it is dead-lettered with reason `stalled`. @defaultValue 5 */
  JOB_MAX_STALLS: z.coerce.number().int().min(0).max(1000).default(5),
  /** SIGTERM: how long in-flight jobs may take to finish before the worker exits. @defaultValue 30000 */
  SHUTDOWN_GRACE_MS: z.coerce.number().int().min(0).default(30_000),
  /** Dead letters older than this are deleted. @defaultValue 30 */
  DLQ_MAX_AGE_DAYS: z.coerce.number().min(0.001).default(30),
  /** At most this many dead letters are kept (the oldest go first). @defaultValue 1000000 */
  DLQ_MAX_COUNT: z.coerce.number().int().min(1).default(1_000_000),
  /** Largest params + context of one job, in bytes of JSON; a larger job is refused at enqueue. @defaultValue 262144 */
  JOB_MAX_BYTES: z.coerce
    .number()
    .int()
    .min(1024)
    .max(16 * 1024 * 1024)
    .default(256 * 1024),
  /** How long an idempotency key deduplicates enqueues, in seconds. @defaultValue 86400 */
  IDEMPOTENCY_TTL_SECONDS: z.coerce.number().int().min(1).default(86_400),
});

export type Config = z.infer<typeof envSchema>;

export class ConfigError extends Error {
  readonly code = 'config_invalid';
}

/** Parses the environment once at start; a bad value names its variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const input: Record<string, string> = {};
  for (const key of Object.keys(envSchema.shape)) {
    const value = env[key];
    if (value !== undefined && value !== '') input[key] = value;
  }
  const parsed = envSchema.safeParse(input);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid environment: ${lines.join('; ')}`);
  }
  if (parsed.data.REDIS_SENTINELS?.length && parsed.data.REDIS_CLUSTER_NODES?.length) {
    throw new ConfigError('invalid environment: REDIS_SENTINELS and REDIS_CLUSTER_NODES exclude each other: set one');
  }
  return parsed.data;
}

/** The key prefix with a Redis Cluster hash tag; queue partitions and rate-limit keys derive tags of their own from it (relayKeys). */
export function hashTaggedPrefix(prefix: string): string {
  return prefix.includes('{') ? prefix : `{${prefix}}`;
}
