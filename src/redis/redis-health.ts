import type { RedisClient } from './redis-connection.js';

/** How long a readiness check waits for Redis to answer. */
export const READY_TIMEOUT_MS = 2000;

/**
 * How long an API call waits before it checks (a PING of READY_TIMEOUT_MS) whether Redis still
 * answers: a call to a silent Redis answers 503 `redis_unavailable` after about this plus
 * READY_TIMEOUT_MS, not never (BullMQ's connection retries its commands without end).
 */
export const API_REDIS_WAIT_MS = 5000;

/** `reason` is short and names no host; `detail` is the driver's own text, for the log only. */
export type RedisHealth = { ok: true } | { ok: false; reason: string; detail?: string };

/**
 * Whether Redis answers a PING within `timeoutMs`. A connection that is not up answers at once
 * (no PING queued behind a reconnect); one that is up but silent (a hung server, a lost network)
 * answers when the time is over. Never throws.
 */
export async function checkRedis(redis: RedisClient, timeoutMs = READY_TIMEOUT_MS): Promise<RedisHealth> {
  if (redis.status !== 'ready') return { ok: false, reason: `redis unavailable: connection ${redis.status}` };
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<RedisHealth>((resolve) => {
    timer = setTimeout(() => resolve({ ok: false, reason: `redis unavailable: no answer within ${timeoutMs} ms` }), timeoutMs);
  });
  const ping = redis.ping().then(
    (): RedisHealth => ({ ok: true }),
    (err: unknown): RedisHealth => ({
      ok: false,
      reason: 'redis unavailable: the check failed',
      detail: err instanceof Error ? err.message : String(err),
    }),
  );
  try {
    return await Promise.race([ping, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves when the connection is up (at once when it is); never rejects. */
export function whenReady(redis: RedisClient): Promise<void> {
  return redis.status === 'ready' ? Promise.resolve() : new Promise((r) => redis.once('ready', () => r()));
}
