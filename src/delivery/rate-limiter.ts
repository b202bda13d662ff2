import type { RedisClient, RelayKeys } from '../redis/redis-connection.js';
import { luaScript } from '../redis/lua-script.js';

/** What the limiter decided for one attempt. */
export type RateDecision =
  /** Send now. */
  | { kind: 'go' }
  /** A slot is reserved for this job at `at` (ms epoch): defer the job until then. */
  | { kind: 'wait'; at: number; waitMs: number }
  /** The next free slot is further away than maxWaitMs. */
  | { kind: 'capped'; waitMs: number };

export interface RateLimitSpec {
  key: string;
  max: number;
  perMs: number;
  maxWaitMs: number;
}

/*
 * GCRA with reservations, exact across every worker.
 * KEYS[1] the key's theoretical arrival time (TAT, ms), KEYS[2] the key's reserved slots (zset
 * member jobId, score slot ms), KEYS[3] the key's pause, KEYS[4] the spacing each slot was reserved
 * at (hash field jobId): all under the rate-limit key's hash tag, so the script stays in one slot
 * of a Redis Cluster whatever partition the job is in.
 * ARGV[1] now ms, ARGV[2] emission interval T = perMs / max, ARGV[3] burst tolerance in ms,
 * ARGV[4] maxWaitMs, ARGV[5] how late (ms) a job may use its reserved slot,
 * ARGV[6] waits up to this long are spent in the worker (no slot is kept for the job), ARGV[7] jobId,
 * ARGV[8] how many slots a call may take at once (see BLOCK_SPAN_MS), ARGV[9] BLOCK_SPAN_MS,
 * ARGV[10] '1': a block or nothing (a block fetched ahead of need, see PREFETCH_LATE_MS)
 * Returns { 0 } go, { 1, at } wait for the slot reserved at `at`, { 2, waitMs } capped,
 * { 3, n, first }: the n slots from `first` (a decimal string, under ARGV[9] ms away) are the caller's,
 * { 4 }: no block could be had and, as asked, nothing was taken.
 * A job that comes back for its reserved slot goes without taking another, so a deferred job is
 * picked twice at most; unless its limit was lowered since (its slot was spaced for the old one),
 * or the third party paused the key: then it queues again like a new request. A reservation more
 * than ARGV[5] in the past would be refused anyway, so those are pruned on every call (a hundred at
 * a time): the set holds only slots still to come, and expires with the last of them.
 * maxWaitMs counts the wait for the limit's own slots: a pause the third party asked for does not.
 */
const GCRA_SCRIPT = luaScript(`
local now = tonumber(ARGV[1])
local t = tonumber(ARGV[2])
local past = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - tonumber(ARGV[5])), 'LIMIT', 0, 100)
if #past > 0 then
  redis.call('ZREM', KEYS[2], unpack(past))
  redis.call('HDEL', KEYS[4], unpack(past))
end
local slot = redis.call('ZSCORE', KEYS[2], ARGV[7])
local paused = tonumber(redis.call('GET', KEYS[3]) or '0')
if slot then
  redis.call('ZREM', KEYS[2], ARGV[7])
  local spacing = tonumber(redis.call('HGET', KEYS[4], ARGV[7]) or '0')
  redis.call('HDEL', KEYS[4], ARGV[7])
  -- The third party asked the key to back off since this slot was reserved: queue again.
  if paused > now then slot = nil end
  -- The limit was lowered since: slots spaced for the old one would exceed it.
  if spacing > 0 and spacing < t * 0.999 then slot = nil end
end
if slot then
  local late = now - tonumber(slot)
  -- Back early (it is woken ahead of its slot on purpose): wait in the worker until the slot.
  if late < 0 then return { 1, tonumber(slot) } end
  -- On time: go. Much later (the job could not run at its slot): going now would bunch with
  -- later slots, so it queues again like a new request.
  if late <= tonumber(ARGV[5]) then return { 0 } end
end
local tau = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allowAt = tat - tau
local newTat = tat + t
local ttl = math.ceil(newTat - now + 1000)
-- Under a millisecond away goes now: no timer waits less, and a non-binding limit (a huge max)
-- would otherwise make every request after the first in a millisecond wait a whole one.
local n = tonumber(ARGV[8])
-- A block only while no job holds a reservation, only from a slot due within ARGV[9] ms, and only
-- of slots within maxWaitMs.
if n > 1 and allowAt < now + tonumber(ARGV[9]) and allowAt + n * t - now <= tonumber(ARGV[4])
    and redis.call('EXISTS', KEYS[2]) == 0 then
  newTat = tat + n * t
  redis.call('SET', KEYS[1], string.format('%.3f', newTat), 'PX', math.ceil(newTat - now + 1000))
  return { 3, n, string.format('%.3f', allowAt) }
end
-- A block fetched ahead of need takes nothing when no block can be had.
if ARGV[10] == '1' then return { 4 } end
if allowAt < now + 1 then
  redis.call('SET', KEYS[1], string.format('%.3f', newTat), 'PX', ttl)
  return { 0 }
end
local wait = math.ceil(allowAt - now)
local pausedFor = 0
if paused > now then pausedFor = paused - now end
if wait - pausedFor > tonumber(ARGV[4]) then return { 2, wait } end
redis.call('SET', KEYS[1], string.format('%.3f', newTat), 'PX', ttl)
if wait > tonumber(ARGV[6]) then
  redis.call('ZADD', KEYS[2], math.ceil(allowAt), ARGV[7])
  redis.call('HSET', KEYS[4], ARGV[7], ARGV[2])
  -- Slots only move forward, so this one is the last: the set lives until it is past.
  redis.call('PEXPIRE', KEYS[2], wait + 60000)
  redis.call('PEXPIRE', KEYS[4], wait + 60000)
end
return { 1, math.ceil(allowAt) }
`);

export const SPACING_MARGIN = 1.01;

/**
 * A generous limit (two or more slots fit in BLOCK_SPAN_MS) hands a worker a block of slots in one
 * script call: BLOCK_SPAN_MS worth, at most BLOCK_MAX_SLOTS, the first under BLOCK_SPAN_MS away.
 * The worker gives them out in order to jobs of the same spacing, each no earlier than its time, so
 * requests keep the same spacing as one call per job; a slot it cannot use in time is lost to the
 * budget, never added to it. A block read late is moved later by at most MAX_ARRIVAL_SHIFT_MS (see
 * `arrived`): its requests may leave up to that much later than their slots, never earlier. A key
 * with a backlog or a reservation gets one slot per call as before.
 */
export const BLOCK_SPAN_MS = 5;
export const BLOCK_MAX_SLOTS = 128;

/** Slots of one key granted to this process in one script call: `left` of them, from `next`, `t` apart. */
interface SlotBlock {
  next: number;
  t: number;
  left: number;
}

/** How many slots of spacing `t` one call may take. */
export function blockSize(t: number): number {
  return Math.max(1, Math.min(BLOCK_MAX_SLOTS, Math.floor(BLOCK_SPAN_MS / t)));
}

/** The spacing of a limit's slots: 1% wider absorbs the jitter between a slot and the moment its request leaves. */
export function slotSpacing(limit: { max: number; perMs: number }): number {
  return (limit.perMs / limit.max) * SPACING_MARGIN;
}

/**
 * The next block is asked for in the background, while the current one still serves, once the slot
 * just taken was this late (the current block is dropped LATE_TOLERANCE_MS after its slots) or
 * when a quarter of its slots are left. Without it every block ran out before the next was asked
 * for, and the jobs arriving during that round trip waited for it: 4 in 10 at full speed.
 */
export const PREFETCH_LATE_MS = 5;

/** A block read this long after its first slot starts this long before it was read (see `arrived`). */
export const ARRIVAL_SLACK_MS = 1;

/** The most a block read late is moved later (see `arrived`): as much as a slot may be late. */
export const MAX_ARRIVAL_SHIFT_MS = 15;

/** After a block call brought no block (a backlog or a reservation), the key's callers ask on their own this long. */
const NO_BLOCK_RECHECK_MS = 100;

/** A job this late for its reserved slot queues again instead of bunching with later slots. */
export const LATE_TOLERANCE_MS = 15;

/** Bound on the blocks one process holds (keys come from definitions, but never trust a count). */
const MAX_BLOCKS = 10_000;

/**
 * A job deferred to the delayed set is woken this long before its slot and waits the rest in the
 * worker: jobs come back from the delayed set up to ~100 ms late (an idle Redis checks blocked
 * clients' timeouts every 1000/hz ms), which would otherwise cost them their slot.
 */
export const DELAYED_WAKE_EARLY_MS = 200;

/**
 * A slot this close is waited for inside the worker, holding its concurrency slot: punctual, one
 * pick per job, and while a worker's slots are full of near waits it stops pulling jobs it could
 * only defer. Farther slots are waited for in BullMQ's delayed set.
 */
export const IN_PROCESS_WAIT_MS = 1000;

/*
 * Back-pressure: no slot of the key before `until`.
 * KEYS[1] the key's TAT, KEYS[2] the key's pause; ARGV[1] until (ms epoch), ARGV[2] now
 */
const PUSH_BACK_SCRIPT = luaScript(`
local untilMs = tonumber(ARGV[1])
local ttl = math.ceil(untilMs - tonumber(ARGV[2]) + 1000)
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused < untilMs then redis.call('SET', KEYS[2], ARGV[1], 'PX', ttl) end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < untilMs then redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl) end
return 1
`);

/*
 * A lease on one of a key's concurrent request permits.
 * KEYS[1] the key's leases (zset member jobId, score lease expiry ms)
 * ARGV[1] now, ARGV[2] max permits, ARGV[3] lease expiry, ARGV[4] jobId
 * Returns 1 when the lease is held (again, after a crash rerun), 0 when every permit is taken.
 * The set lives until its last lease runs out: actions that share the key may lease for different
 * lengths (their timeoutMs differ), and a short lease must not expire a longer one with the set.
 */
const LEASE_SCRIPT = luaScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(last[2]) - tonumber(ARGV[1])))
  return 1
end
return 0
`);

export interface RateLimiter {
  /**
   * Takes one of the key's `max` in-flight permits for this job until `leaseMs` from now (a
   * crashed worker's lease runs out by itself); false when all are taken.
   */
  lease(key: string, max: number, jobId: string, now: number, leaseMs: number): Promise<boolean>;
  release(key: string, jobId: string): Promise<void>;
  /** Takes a slot for this job now, or reserves the next one. */
  acquire(spec: RateLimitSpec, jobId: string, now: number): Promise<RateDecision>;
  /**
   * Takes the next slot of this process's block for the key when it is due now and was granted at
   * this limit's spacing (no Redis call); false otherwise. Asks for the key's next block in the
   * background when this one is running out (see PREFETCH_LATE_MS).
   */
  takeDue(key: string, limit: Omit<RateLimitSpec, 'key'>, now: number): boolean;
  /** A 429 / 503 with Retry-After: the whole key waits until `until`, not only that job. */
  pushBack(key: string, until: number, now: number): Promise<void>;
  /** Until when the key is paused by back-pressure (0 when it is not). */
  pausedUntil(key: string): Promise<number>;
}

/**
 * The next slot of this process's block for the key, or undefined when it holds none still usable:
 * slots more than LATE_TOLERANCE_MS past are dropped rather than bunched with later ones. The block
 * fetched ahead takes over once its first slot is due or the current one is spent.
 */
function takeFromBlock(local: LocalSlots, key: string, t: number, now: number, dueOnly = false): RateDecision | undefined {
  const ahead = local.next.get(key);
  if (ahead?.t === t && (ahead.next < now + 1 || !usableBlock(local.blocks, key, t, now))) {
    local.next.delete(key);
    local.blocks.set(key, ahead);
  }
  const block = usableBlock(local.blocks, key, t, now);
  // takeDue takes a slot only when it is due: one to wait for stays in the block for acquire.
  if (!block || (dueOnly && block.next >= now + 1)) return undefined;
  const at = block.next;
  block.next += block.t;
  if (--block.left === 0) local.blocks.delete(key);
  return at < now + 1 ? GO : { kind: 'wait', at: Math.ceil(at), waitMs: Math.ceil(at - now) };
}

/** The key's block at spacing `t`, its late slots dropped; undefined when there is none (a spent one is deleted). */
function usableBlock(blocks: Map<string, SlotBlock>, key: string, t: number, now: number): SlotBlock | undefined {
  const block = blocks.get(key);
  // Two actions may share a key with different limits: a block serves only the spacing it was granted at.
  if (block?.t !== t) return undefined;
  const late = now - LATE_TOLERANCE_MS - block.next;
  if (late > 0) {
    const skip = Math.ceil(late / block.t);
    block.next += skip * block.t;
    block.left -= skip;
  }
  if (block.left <= 0) {
    blocks.delete(key);
    return undefined;
  }
  return block;
}

const GO: RateDecision = { kind: 'go' };

/** This process's blocks and the script calls under way, per key. */
interface LocalSlots {
  blocks: Map<string, SlotBlock>;
  /**
   * A block call in flight for the key, resolving to whether it brought a block: the callers
   * arriving meanwhile wait for it instead of each asking.
   */
  asking: Map<string, Promise<boolean>>;
  /** Until when the key's callers ask on their own: its last block call brought no block. */
  noBlockUntil: Map<string, number>;
  /** Bumped by each pushBack: a block asked for before it is not kept. */
  pushBacks: Map<string, number>;
  /** A block fetched ahead of need, waiting for the current one to be spent or for its first slot. */
  next: Map<string, SlotBlock>;
  /** Monotonic milliseconds: how long a call or a wait took, added to the caller's `now`. */
  clock: () => number;
}

async function acquireSlot(redis: RedisClient, keys: RelayKeys, local: LocalSlots, spec: RateLimitSpec, jobId: string, now: number) {
  const t = slotSpacing(spec);
  let ownCall = blockSize(t) === 1 || (local.noBlockUntil.get(spec.key) ?? 0) > now;
  for (;;) {
    const mine = takeFromBlock(local, spec.key, t, now);
    if (mine) return mine;
    const asking = ownCall ? undefined : local.asking.get(spec.key);
    if (!asking) break;
    const from = local.clock();
    // A caller that waited has the time it waited on the clock.
    ownCall = !(await asking);
    now += local.clock() - from;
  }
  if (ownCall) return runGcra(redis, keys, local, spec, t, jobId, now);
  let done = (_granted: boolean): void => undefined;
  local.asking.set(spec.key, new Promise<boolean>((resolve) => (done = resolve)));
  let granted = false;
  try {
    const decision = await runGcra(redis, keys, local, spec, t, jobId, now);
    granted = local.blocks.get(spec.key)?.t === t;
    if (!granted) remember(local.noBlockUntil, spec.key, now + NO_BLOCK_RECHECK_MS);
    return decision;
  } finally {
    local.asking.delete(spec.key);
    done(granted);
  }
}

/** Sets a per-key value in a map bounded like the blocks (keys come from definitions, but never trust a count). */
function remember<V>(map: Map<string, V>, key: string, value: V): void {
  if (map.size > MAX_BLOCKS) map.clear();
  map.set(key, value);
}

/** The GCRA script for `spec` at spacing `t`; `blockOnly`: a block or nothing (code 4). */
function gcra(
  redis: RedisClient,
  keys: RelayKeys,
  spec: RateLimitSpec,
  t: number,
  now: number,
  jobId: string,
  blockOnly: boolean,
): Promise<[number, number | undefined, string | undefined]> {
  return GCRA_SCRIPT.run(
    redis,
    4,
    keys.rateLimit(spec.key),
    keys.rateLimitSlots(spec.key),
    keys.rateLimitPause(spec.key),
    keys.rateLimitSpacing(spec.key),
    String(now),
    String(t),
    // No burst: requests are spaced T apart, so no sliding window of perMs sees more than max + 1.
    '0',
    String(spec.maxWaitMs),
    String(LATE_TOLERANCE_MS),
    String(IN_PROCESS_WAIT_MS),
    jobId,
    String(blockSize(t)),
    String(BLOCK_SPAN_MS),
    blockOnly ? '1' : '0',
  ) as Promise<[number, number | undefined, string | undefined]>;
}

async function runGcra(
  redis: RedisClient,
  keys: RelayKeys,
  local: LocalSlots,
  spec: RateLimitSpec,
  t: number,
  jobId: string,
  now: number,
): Promise<RateDecision> {
  const pushBacks = local.pushBacks.get(spec.key);
  const askedAt = local.clock();
  const [code, value, first] = await gcra(redis, keys, spec, t, now, jobId, false);
  if (code === 0) return GO;
  if (code === 3) {
    // The caller's clock moved on during the call.
    const arrival = now + (local.clock() - askedAt);
    const block = arrived(Number(first), t, value ?? 1, arrival);
    // A Retry-After that arrived while the block was asked for: only this job's slot stands.
    if (local.pushBacks.get(spec.key) !== pushBacks) block.left = 1;
    remember(local.blocks, spec.key, block);
    return takeFromBlock(local, spec.key, t, arrival) ?? GO;
  }
  if (code === 1) return { kind: 'wait', at: value ?? now, waitMs: Math.max(0, (value ?? now) - now) };
  return { kind: 'capped', waitMs: value ?? 0 };
}

/**
 * A block as the process holds it. Its slots were counted from the moment the call left; a busy
 * worker reads the answer 10-20 ms later, when they would already be near LATE_TOLERANCE_MS and
 * dropped at once. A block that arrives more than ARRIVAL_SLACK_MS after its first slot is moved
 * to start ARRIVAL_SLACK_MS before it arrived: later, never earlier, and by at most
 * MAX_ARRIVAL_SHIFT_MS. So a slot is used at most MAX_ARRIVAL_SHIFT_MS + LATE_TOLERANCE_MS after
 * its time, which bounds both what a late block can bunch with later slots and how long after a
 * pause another process's block can still be used (see pushBack).
 */
function arrived(first: number, t: number, n: number, arrival: number): SlotBlock {
  return { next: Math.max(first, Math.min(arrival - ARRIVAL_SLACK_MS, first + MAX_ARRIVAL_SHIFT_MS)), t, left: n };
}

/** Whether the slot just taken from the key's block calls for the next block now. */
function wantsNext(local: LocalSlots, key: string, t: number, now: number): boolean {
  if (local.asking.has(key) || local.next.get(key)?.t === t || (local.noBlockUntil.get(key) ?? 0) > now) return false;
  const block = local.blocks.get(key);
  // Spent: the next caller would ask anyway.
  if (!block) return true;
  return now - (block.next - block.t) > PREFETCH_LATE_MS || block.left <= blockSize(t) / 4;
}

/**
 * Asks for the key's next block in the background, once the caller's synchronous work is done.
 * Callers that run out meanwhile wait for it as for any block call; it takes nothing when no block
 * can be had, and is dropped by a pushBack.
 */
function fetchNext(redis: RedisClient, keys: RelayKeys, local: LocalSlots, spec: RateLimitSpec, t: number, now: number): void {
  const pushBacks = local.pushBacks.get(spec.key);
  const askedAt = local.clock();
  // No job of its own: the block-only call never reserves a slot for one. Built in a microtask: a
  // script call takes the worker 50-100 µs to build, and the job whose slot asked for it (one in
  // seven at 1,000 jobs/s) paid that before its own request went out. On the plain path (no auth,
  // signing, TLS, circuit breaker, permits or tracing) that job now hands its request to undici
  // first, synchronously; where a step of its own awaits first, the call still goes out ahead.
  const call = Promise.resolve().then(() => gcra(redis, keys, spec, t, now, '', true));
  const granted = call.then(
    ([code, n, first]) => {
      local.asking.delete(spec.key);
      if (code !== 3 || local.pushBacks.get(spec.key) !== pushBacks) {
        remember(local.noBlockUntil, spec.key, now + NO_BLOCK_RECHECK_MS);
        return false;
      }
      remember(local.next, spec.key, arrived(Number(first), t, n ?? 1, now + (local.clock() - askedAt)));
      return true;
    },
    () => {
      local.asking.delete(spec.key);
      return false;
    },
  );
  local.asking.set(spec.key, granted);
}

/** `clock`: monotonic milliseconds, for the time a script call took (tests pass their own). */
export function createRateLimiter(redis: RedisClient, keys: RelayKeys, clock: () => number = () => performance.now()): RateLimiter {
  const local: LocalSlots = { blocks: new Map(), asking: new Map(), noBlockUntil: new Map(), pushBacks: new Map(), next: new Map(), clock };
  return {
    acquire: (spec, jobId, now) => acquireSlot(redis, keys, local, spec, jobId, now),
    takeDue(key, limit, now) {
      // Most calls at full speed: a due slot of the current block, found without building anything.
      const at = local.blocks.get(key)?.next ?? Infinity;
      if (!(at < now + 1 || (local.next.get(key)?.next ?? Infinity) < now + 1)) return false;
      const t = slotSpacing(limit);
      if (takeFromBlock(local, key, t, now, true) !== GO) return false;
      if (wantsNext(local, key, t, now))
        fetchNext(redis, keys, local, { key, max: limit.max, perMs: limit.perMs, maxWaitMs: limit.maxWaitMs }, t, now);
      return true;
    },
    async pushBack(key, until, now) {
      // This process's unused slots would go before `until`; other processes' are used up or dropped
      // within BLOCK_SPAN_MS + MAX_ARRIVAL_SHIFT_MS + LATE_TOLERANCE_MS.
      local.blocks.delete(key);
      local.next.delete(key);
      remember(local.pushBacks, key, (local.pushBacks.get(key) ?? 0) + 1);
      await PUSH_BACK_SCRIPT.run(redis, 2, keys.rateLimit(key), keys.rateLimitPause(key), String(Math.ceil(until)), String(now));
    },
    async lease(key, max, jobId, now, leaseMs) {
      const held = await LEASE_SCRIPT.run(redis, 1, keys.rateLimitLeases(key), String(now), String(max), String(now + leaseMs), jobId);
      return held === 1;
    },
    async release(key, jobId) {
      await redis.zrem(keys.rateLimitLeases(key), jobId);
    },
    async pausedUntil(key) {
      return Number((await redis.get(keys.rateLimitPause(key))) ?? 0);
    },
  };
}
