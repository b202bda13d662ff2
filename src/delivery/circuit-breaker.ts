import type { RedisClient, RelayKeys } from '../redis/redis-connection.js';
import { luaScript } from '../redis/lua-script.js';

export interface CircuitConfig {
  failureRatio: number;
  minRequests: number;
  windowMs: number;
  openMs: number;
}

/** What the breaker allows for one attempt. */
export type CircuitDecision =
  | { kind: 'closed' }
  /** Half-open: this attempt is the one probe. */
  | { kind: 'probe' }
  /** Open (or a probe is already out): defer the job until `until`. */
  | { kind: 'defer'; until: number; state: 'open' | 'half-open' };

export type CircuitTransition = 'opened' | 'closed' | 'none';

/*
 * KEYS[1] the key's state hash (state = open | half, openUntil), KEYS[2] the probe lock
 * ARGV[1] now, ARGV[2] probe lock ms
 * Returns { 0 } closed, { 1, until } open, { 2 } probe granted, { 3, retryAt } a probe is out.
 */
const CHECK_SCRIPT = luaScript(`
local now = tonumber(ARGV[1])
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return { 0 } end
if state == 'open' then
  local untilMs = tonumber(redis.call('HGET', KEYS[1], 'openUntil') or '0')
  if now < untilMs then return { 1, untilMs } end
  redis.call('HSET', KEYS[1], 'state', 'half')
end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return { 2 } end
return { 3, now + 1000 }
`);

/*
 * KEYS[1] state hash, KEYS[2] probe lock, KEYS[3] the current window's counters
 * ARGV[1] now, ARGV[2] failed (0|1), ARGV[3] was the probe (0|1), ARGV[4] failureRatio,
 * ARGV[5] minRequests, ARGV[6] windowMs, ARGV[7] openMs
 * Returns 1 when this outcome opened the circuit, 2 when it closed it, 0 otherwise.
 */
const RECORD_SCRIPT = luaScript(`
local now = tonumber(ARGV[1])
local failed = ARGV[2] == '1'
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[2])
  if failed then
    redis.call('HSET', KEYS[1], 'state', 'open', 'openUntil', now + tonumber(ARGV[7]))
    return 0
  end
  redis.call('DEL', KEYS[1], KEYS[3])
  return 2
end
if redis.call('HGET', KEYS[1], 'state') then return 0 end
local n = redis.call('HINCRBY', KEYS[3], 'n', 1)
local f = tonumber(redis.call('HGET', KEYS[3], 'f') or '0')
if failed then f = redis.call('HINCRBY', KEYS[3], 'f', 1) end
redis.call('PEXPIRE', KEYS[3], ARGV[6])
if n >= tonumber(ARGV[5]) and f / n >= tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'openUntil', now + tonumber(ARGV[7]))
  redis.call('DEL', KEYS[3])
  return 1
end
return 0
`);

export interface CircuitBreaker {
  check(key: string, now: number, probeLockMs: number): Promise<CircuitDecision>;
  /** Records one request's outcome; returns the transition it caused, so it is logged once. */
  record(key: string, failed: boolean, wasProbe: boolean, now: number, cfg: CircuitConfig): Promise<CircuitTransition>;
}

export function createCircuitBreaker(redis: RedisClient, keys: RelayKeys): CircuitBreaker {
  return {
    async check(key, now, probeLockMs) {
      const [code, value] = (await CHECK_SCRIPT.run(
        redis,
        2,
        keys.circuit(key),
        `${keys.circuit(key)}:probe`,
        String(now),
        String(probeLockMs),
      )) as [number, number | undefined];
      if (code === 0) return { kind: 'closed' };
      if (code === 2) return { kind: 'probe' };
      return { kind: 'defer', until: value ?? now + 1000, state: code === 1 ? 'open' : 'half-open' };
    },
    async record(key, failed, wasProbe, now, cfg) {
      // Fixed windows: the counters of one window of windowMs.
      const bucket = Math.floor(now / cfg.windowMs);
      const r = (await RECORD_SCRIPT.run(
        redis,
        3,
        keys.circuit(key),
        `${keys.circuit(key)}:probe`,
        `${keys.circuit(key)}:w:${bucket}`,
        String(now),
        failed ? '1' : '0',
        wasProbe ? '1' : '0',
        String(cfg.failureRatio),
        String(cfg.minRequests),
        String(cfg.windowMs),
        String(cfg.openMs),
      )) as number;
      return r === 1 ? 'opened' : r === 2 ? 'closed' : 'none';
    },
  };
}

/** What the console shows of a key's breaker, as the `action_relay_circuit_state` gauge names it. */
export type CircuitState = 'closed' | 'open' | 'half-open';

/** Reads a key's state without changing it (an open circuit past its openUntil is half-open). */
export async function readCircuitState(redis: RedisClient, keys: RelayKeys, key: string, now: number): Promise<CircuitState> {
  const [state, openUntil] = await redis.hmget(keys.circuit(key), 'state', 'openUntil');
  if (!state) return 'closed';
  return state === 'open' && now < Number(openUntil ?? 0) ? 'open' : 'half-open';
}
