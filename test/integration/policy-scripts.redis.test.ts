import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { inject } from 'vitest';
import { createCircuitBreaker, readCircuitState, type CircuitConfig } from '../../src/delivery/circuit-breaker.js';
import {
  BLOCK_MAX_SLOTS,
  BLOCK_SPAN_MS,
  blockSize,
  createRateLimiter as createLimiter,
  IN_PROCESS_WAIT_MS,
  LATE_TOLERANCE_MS,
  MAX_ARRIVAL_SHIFT_MS,
  PREFETCH_LATE_MS,
  SPACING_MARGIN,
  type RateDecision,
  type RateLimitSpec,
} from '../../src/delivery/rate-limiter.js';
import { relayKeys } from '../../src/redis/redis-connection.js';

/*
 * The rate-limit and circuit-breaker scripts against a real Redis, with the clock passed in: every
 * figure here is exact, so a script that lets a request go a millisecond early, admits one more
 * per window or grants a second probe fails. (Rates measured with real time live in the bench.)
 */

const prefix = `{test-policy-${randomUUID().slice(0, 8)}}`;
const keys = relayKeys(prefix);
let redis: Redis;

beforeAll(() => {
  redis = new Redis(inject('redisUrl'));
});
afterAll(async () => {
  const found = await redis.keys(`${prefix}*`);
  if (found.length > 0) await redis.unlink(...found);
  await redis.quit();
});

/** Script calls take no time on the limiter's own clock: every figure follows the `now` passed in. */
const createRateLimiter = (r: Redis, k: typeof keys) => createLimiter(r, k, () => 0);

const slotAt = (d: RateDecision): number => {
  if (d.kind === 'go') return -1;
  if (d.kind === 'wait') return d.at;
  throw new Error(`capped after ${d.waitMs} ms`);
};

describe('rate limiter (GCRA with reservations)', () => {
  const spec = (key: string, over: Partial<RateLimitSpec> = {}): RateLimitSpec => ({
    key,
    max: 10,
    perMs: 1000,
    maxWaitMs: 60_000,
    ...over,
  });
  const spacing = (1000 / 10) * SPACING_MARGIN;

  it('spaces requests exactly perMs / max (1% wider) apart, the first at once', async () => {
    const limiter = createRateLimiter(redis, keys);
    const now = 1_000_000;
    const slots: number[] = [];
    for (let i = 0; i < 25; i++) {
      const d = await limiter.acquire(spec('spacing'), `job-${i}`, now);
      slots.push(d.kind === 'go' ? now : slotAt(d));
    }
    expect(slots[0]).toBe(now);
    for (let i = 1; i < slots.length; i++) expect(slots[i]).toBe(Math.ceil(now + i * spacing));
  });

  it('never lets more than max requests into any window of perMs', async () => {
    const limiter = createRateLimiter(redis, keys);
    const start = 2_000_000;
    const sent: number[] = [];
    // 40 callers arrive at random moments of the first 2 s; each is granted a slot.
    const arrivals = Array.from({ length: 40 }, (_, i) => start + ((i * 7919) % 2000)).sort((a, b) => a - b);
    for (const [i, at] of arrivals.entries()) {
      const d = await limiter.acquire(spec('window', { maxWaitMs: 600_000 }), `w-${i}`, at);
      sent.push(d.kind === 'go' ? at : slotAt(d));
    }
    sent.sort((a, b) => a - b);
    for (let i = 0; i + 10 < sent.length; i++) {
      // The 11th request after any request is at least perMs later: no window of 1000 ms holds 11.
      expect(sent[i + 10]! - sent[i]!).toBeGreaterThanOrEqual(1000);
    }
  });

  it('reserves slots beyond the in-process wait, and a job back for its slot neither waits again nor takes another', async () => {
    const limiter = createRateLimiter(redis, keys);
    const now = 3_000_000;
    const k = spec('reserve');
    // Fill the in-process horizon: slots within IN_PROCESS_WAIT_MS are not reserved.
    const decisions: RateDecision[] = [];
    for (let i = 0; i < 12; i++) decisions.push(await limiter.acquire(k, `r-${i}`, now));
    const far = decisions.findIndex((d) => d.kind === 'wait' && d.waitMs > IN_PROCESS_WAIT_MS);
    let firstFar = 0;
    while (Math.ceil(firstFar * spacing) <= IN_PROCESS_WAIT_MS) firstFar++;
    expect(far).toBe(firstFar);
    const reserved = slotAt(decisions[far]!);
    expect(await redis.zscore(keys.rateLimitSlots('reserve'), `r-${far}`)).toBe(String(reserved));
    const near = far - 1;
    expect(await redis.zscore(keys.rateLimitSlots('reserve'), `r-${near}`)).toBeNull();

    // Back 150 ms early (woken ahead on purpose): it is told to wait for the same slot.
    expect(await limiter.acquire(k, `r-${far}`, reserved - 150)).toEqual({ kind: 'wait', at: reserved, waitMs: 150 });
    // Back on time (within the late tolerance): it goes, and its reservation is used up.
    await redis.zadd(keys.rateLimitSlots('reserve'), reserved, `r-${far}`);
    expect(await limiter.acquire(k, `r-${far}`, reserved + LATE_TOLERANCE_MS)).toEqual({ kind: 'go' });
    expect(await redis.zscore(keys.rateLimitSlots('reserve'), `r-${far}`)).toBeNull();
  });

  it('a job too late for its reserved slot queues again behind the others instead of bunching', async () => {
    const limiter = createRateLimiter(redis, keys);
    const now = 4_000_000;
    const k = spec('late');
    let last: RateDecision = { kind: 'go' };
    for (let i = 0; i < 12; i++) last = await limiter.acquire(k, `l-${i}`, now);
    const slot = slotAt(last);
    const tat = Number(await redis.get(keys.rateLimit('late')));
    const lateBy = LATE_TOLERANCE_MS + 1;
    const again = await limiter.acquire(k, 'l-11', slot + lateBy);
    // It takes the next free slot after every one already handed out, not its old one.
    expect(slotAt(again)).toBe(Math.ceil(tat));
  });

  it('refuses a slot further than maxWaitMs with capped, and keeps the budget untouched', async () => {
    const limiter = createRateLimiter(redis, keys);
    const now = 5_000_000;
    const k = spec('cap', { maxWaitMs: 500 });
    // Slots 0..4 are at most 4 x 101 ms away; the sixth would be 505 ms away.
    for (let i = 0; i < 5; i++) expect((await limiter.acquire(k, `c-${i}`, now)).kind).not.toBe('capped');
    const before = await redis.get(keys.rateLimit('cap'));
    const capped = await limiter.acquire(k, 'c-5', now);
    expect(capped).toEqual({ kind: 'capped', waitMs: Math.ceil(5 * spacing) });
    expect(await redis.get(keys.rateLimit('cap'))).toBe(before);
  });

  it('back-pressure pauses the whole key until the given time, and voids reservations made before it', async () => {
    const limiter = createRateLimiter(redis, keys);
    const now = 6_000_000;
    const k = spec('pause');
    for (let i = 0; i < 12; i++) await limiter.acquire(k, `p-${i}`, now);
    const reservedSlot = Number(await redis.zscore(keys.rateLimitSlots('pause'), 'p-11'));
    expect(reservedSlot).toBeGreaterThan(now);
    await limiter.pushBack('pause', now + 30_000, now);
    expect(await limiter.pausedUntil('pause')).toBe(now + 30_000);
    // A fresh caller waits for the pause.
    expect(slotAt(await limiter.acquire(k, 'p-new', now + 10))).toBeGreaterThanOrEqual(now + 30_000);
    // The job that held a slot before the pause does not use it: it queues again after the pause.
    expect(slotAt(await limiter.acquire(k, 'p-11', reservedSlot))).toBeGreaterThanOrEqual(now + 30_000);
    // A shorter pause never shortens a longer one.
    await limiter.pushBack('pause', now + 1_000, now);
    expect(await limiter.pausedUntil('pause')).toBe(now + 30_000);
  });

  it("hands a generous key out in blocks: one script call per block, every slot on the key's clock", async () => {
    const limiter = createRateLimiter(redis, keys);
    const other = createRateLimiter(redis, keys);
    // 10,000 per second: slots 0.101 ms apart, so a block is BLOCK_MAX_SLOTS of them.
    const k = spec('block', { max: 10_000, perMs: 1000 });
    const t = 0.1 * SPACING_MARGIN;
    const n = blockSize(t);
    expect(n).toBe(Math.min(BLOCK_MAX_SLOTS, Math.floor(BLOCK_SPAN_MS / t)));
    const calls = vi.spyOn(redis, 'evalsha');
    const now = 8_000_000;
    const decisions: RateDecision[] = [];
    // Two processes, alternating, take 3 blocks' worth of slots from jobs arriving every 0.2 ms.
    for (let i = 0; i < 3 * n; i++) {
      decisions.push(await (i % 2 === 0 ? limiter : other).acquire(k, `b-${i}`, now + i * 0.2));
    }
    // The second process's block starts after the first's n slots: its first job waits for it.
    expect(decisions[1]).toEqual({ kind: 'wait', at: Math.ceil(now + n * t), waitMs: Math.ceil(n * t - 0.2) });
    // Each process asked Redis once per n slots: 1.5 n slots each, two blocks each.
    expect(calls).toHaveBeenCalledTimes(4);
    calls.mockRestore();
    // Every slot handed out is on the key's clock: the first process's second block starts when it
    // asked (job 2n, 0.4 n ms in), the other's right after it, n slots each.
    expect(Number(await redis.get(keys.rateLimit('block')))).toBeCloseTo(now + 0.4 * n + 2 * n * t, 2);
  });

  it('callers arriving while a block is asked for wait for it instead of each asking Redis', async () => {
    const limiter = createRateLimiter(redis, keys);
    const k = spec('block-together', { max: 1_000_000, perMs: 1000 });
    const calls = vi.spyOn(redis, 'evalsha');
    const now = 8_500_000;
    // A block and 8 more jobs of one busy worker ask at once: one call brings a block, a second call the rest.
    const decisions = await Promise.all(Array.from({ length: BLOCK_MAX_SLOTS + 8 }, (_, i) => limiter.acquire(k, `t-${i}`, now)));
    expect(calls).toHaveBeenCalledTimes(2);
    calls.mockRestore();
    expect(decisions.every((d) => d.kind === 'go')).toBe(true);
  });

  it('a block never hands out a slot early, drops its late slots, is voided by back-pressure and is not granted while a job holds a reservation', async () => {
    const limiter = createRateLimiter(redis, keys);
    // 2,000 per second: slots 0.505 ms apart, 9 to a block of 5 ms.
    const k = spec('block-time', { max: 2000, perMs: 1000 });
    const t = 0.5 * SPACING_MARGIN;
    const n = blockSize(t);
    expect(n).toBe(9);
    const now = 9_000_000;
    expect(await limiter.acquire(k, 'x-0', now)).toEqual({ kind: 'go' });
    // Slot 1 is under a millisecond away (go); slot 2 is 1.01 ms away: told to wait for it.
    expect(await limiter.acquire(k, 'x-1', now)).toEqual({ kind: 'go' });
    expect(await limiter.acquire(k, 'x-2', now)).toEqual({ kind: 'wait', at: Math.ceil(now + 2 * t), waitMs: Math.ceil(2 * t) });
    // takeDue hands out only a slot that is due: slot 3 is 1.5 ms away now, due a millisecond later.
    expect(limiter.takeDue('block-time', k, now)).toBe(false);
    expect(limiter.takeDue('block-time', k, now + 1)).toBe(true);
    expect(limiter.takeDue('no-block-here', k, now)).toBe(false);
    // Far past the block's slots: they are dropped and a new block is taken from the key's time.
    const later = now + LATE_TOLERANCE_MS + 50;
    expect(limiter.takeDue('block-time', k, later)).toBe(false);
    expect(await limiter.acquire(k, 'x-3', later)).toEqual({ kind: 'go' });
    expect(Number(await redis.get(keys.rateLimit('block-time')))).toBeCloseTo(later + n * t, 2);
    // Back-pressure voids what is left of the block: the next caller waits for the pause.
    await limiter.pushBack('block-time', later + 5000, later);
    expect(slotAt(await limiter.acquire(k, 'x-4', later))).toBeGreaterThanOrEqual(later + 5000);
    // While a job holds a reservation, callers get one slot per call.
    const fresh = createRateLimiter(redis, keys);
    const k2 = spec('block-reserved', { max: 2000, perMs: 1000 });
    await redis.zadd(keys.rateLimitSlots('block-reserved'), now + 60_000, 'holder');
    expect(await fresh.acquire(k2, 'y-0', now)).toEqual({ kind: 'go' });
    expect(Number(await redis.get(keys.rateLimit('block-reserved')))).toBeCloseTo(now + t, 2);
  });

  it('drops exactly the slots of a block that are too late, and no more', async () => {
    const limiter = createRateLimiter(redis, keys);
    const k = spec('block-skip', { max: 2000, perMs: 1000 });
    const calls = vi.spyOn(redis, 'evalsha');
    // Slots s0..s8, 0.505 ms apart from t0; s0 is used at once.
    const t0 = 9_500_000;
    expect(await limiter.acquire(k, 's-0', t0)).toEqual({ kind: 'go' });
    // 16.2 ms on, s1 and s2 are more than 15 ms past: dropped; s3 goes.
    expect(await limiter.acquire(k, 's-1', t0 + 16.2)).toEqual({ kind: 'go' });
    // 18 ms on, s4 and s5 are dropped: s6, s7 and s8 go, then the block is spent.
    for (let i = 0; i < 3; i++) expect(await limiter.acquire(k, `s-${i + 2}`, t0 + 18)).toEqual({ kind: 'go' });
    expect(calls).toHaveBeenCalledTimes(1);
    await limiter.acquire(k, 's-5', t0 + 18);
    expect(calls).toHaveBeenCalledTimes(2);
    // A block whose last slot is dropped asks again rather than inventing a slot past its end.
    const other = createRateLimiter(redis, keys);
    const k2 = spec('block-skip-all', { max: 2000, perMs: 1000 });
    await other.acquire(k2, 'a-0', t0);
    // s1..s8 (0.505 to 4.04 ms after t0) are all more than 15 ms past at t0 + 19.3.
    await other.acquire(k2, 'a-1', t0 + 19.3);
    expect(calls).toHaveBeenCalledTimes(4);
    calls.mockRestore();
  });

  it("keeps each key's block apart, and a binding key's callers do not wait for one another", async () => {
    const limiter = createRateLimiter(redis, keys);
    const calls = vi.spyOn(redis, 'evalsha');
    const now = 9_700_000;
    const a = spec('apart-a', { max: 1_000_000, perMs: 1000 });
    const b = spec('apart-b', { max: 1_000_000, perMs: 1000 });
    for (let i = 0; i < 3; i++) {
      await limiter.acquire(a, `a-${i}`, now);
      await limiter.acquire(b, `b-${i}`, now);
    }
    expect(calls).toHaveBeenCalledTimes(2);
    // 10 per second binds: one slot per call, and three callers send their three calls at once.
    const binding = spec('apart-binding');
    const pending = [0, 1, 2].map((i) => limiter.acquire(binding, `c-${i}`, now));
    expect(calls).toHaveBeenCalledTimes(5);
    await Promise.all(pending);
    calls.mockRestore();
  });

  it("a block serves only its own spacing: another limit on the same key asks Redis, and never takes the block's slots", async () => {
    const limiter = createRateLimiter(redis, keys);
    const calls = vi.spyOn(redis, 'evalsha');
    const now = 9_800_000;
    // Two actions on one host: 1,000 per second (blocks of 4) and 10 per second.
    const fast = spec('shared-host', { max: 1000, perMs: 1000 });
    const slow = spec('shared-host', { max: 10, perMs: 1000 });
    expect(await limiter.acquire(fast, 'f-0', now)).toEqual({ kind: 'go' });
    expect(limiter.takeDue('shared-host', slow, now + 4)).toBe(false);
    // The slow action's job gets a slot of its own from the key's clock: after the fast block's four.
    expect(slotAt(await limiter.acquire(slow, 's-0', now))).toBe(Math.ceil(now + 4 * 1.01));
    expect(calls).toHaveBeenCalledTimes(2);
    // A second slow job is spaced 101 ms after the first, not handed a leftover fast slot.
    expect(slotAt(await limiter.acquire(slow, 's-1', now))).toBe(Math.ceil(now + 4 * 1.01 + 101));
    calls.mockRestore();
  });

  it('callers of a generous key with a backlog each ask at once: no block came back, so none is waited for', async () => {
    const limiter = createRateLimiter(redis, keys);
    const k = spec('generous-backlog', { max: 1000, perMs: 1000 });
    const now = 9_900_000;
    // Another process's reservation: no block is handed out while it is held.
    await redis.zadd(keys.rateLimitSlots('generous-backlog'), now + 60_000, 'elsewhere');
    const calls = vi.spyOn(redis, 'evalsha');
    expect(await limiter.acquire(k, 'g-0', now)).toEqual({ kind: 'go' });
    // The first call brought no block: for a while, every caller sends its own call at once.
    const pending = [1, 2, 3].map((i) => limiter.acquire(k, `g-${i}`, now + 1));
    expect(calls).toHaveBeenCalledTimes(4);
    await Promise.all(pending);
    calls.mockRestore();
  });

  it('hands out no block reaching past maxWaitMs: a slot further away is capped as before', async () => {
    const limiter = createRateLimiter(redis, keys);
    // 1,000 per second (blocks of 4, 4 ms of slots), but no job may wait more than 2 ms.
    const k = spec('short-wait', { max: 1000, perMs: 1000, maxWaitMs: 2 });
    const now = 9_960_000;
    expect(await limiter.acquire(k, 'w-0', now)).toEqual({ kind: 'go' });
    expect(await limiter.acquire(k, 'w-1', now)).toEqual({ kind: 'wait', at: Math.ceil(now + 1.01), waitMs: 2 });
    expect(await limiter.acquire(k, 'w-2', now)).toEqual({ kind: 'capped', waitMs: 3 });
  });

  it('a Retry-After that comes while a block is asked for leaves only the asking job its slot', async () => {
    const limiter = createRateLimiter(redis, keys);
    const k = spec('pushed-midway', { max: 1000, perMs: 1000 });
    const now = 9_950_000;
    const asked = limiter.acquire(k, 'p-0', now);
    await limiter.pushBack('pushed-midway', now + 10_000, now);
    expect(await asked).toEqual({ kind: 'go' });
    // The block's other slots are gone: the next job waits for the pause.
    expect(slotAt(await limiter.acquire(k, 'p-1', now))).toBeGreaterThanOrEqual(now + 10_000);
  });

  /** The call for a block fetched ahead is sent once the code that asked for it has run. */
  const aTurn = () => new Promise((r) => setImmediate(r));
  /** Lets a script call started in the background (a block fetched ahead) come back and be kept. */
  const settled = async (calls: { mock: { results: { value: unknown }[] } }, i: number) => {
    await aTurn();
    await calls.mock.results[i]?.value;
    await aTurn();
  };

  it('asks for the next block in the background once the slot taken runs late: jobs keep taking slots meanwhile', async () => {
    const limiter = createRateLimiter(redis, keys);
    const k = spec('ahead', { max: 1_000_000, perMs: 1000 });
    const t = (1000 / 1_000_000) * SPACING_MARGIN;
    const calls = vi.spyOn(redis, 'evalsha');
    const now = 10_000_000;
    expect(await limiter.acquire(k, 'h-0', now)).toEqual({ kind: 'go' });
    // Under PREFETCH_LATE_MS late: a slot and no call.
    expect(limiter.takeDue('ahead', k, now + PREFETCH_LATE_MS - 1)).toBe(true);
    expect(calls).toHaveBeenCalledTimes(1);
    // Later than that: a slot, and the next block is asked for as soon as the caller's synchronous
    // work is done (the job's own request goes out first).
    const asked = now + PREFETCH_LATE_MS + 1;
    expect(limiter.takeDue('ahead', k, asked)).toBe(true);
    expect(calls).toHaveBeenCalledTimes(1);
    await aTurn();
    expect(calls).toHaveBeenCalledTimes(2);
    // While the call is under way the current block still serves, with no other call.
    expect(limiter.takeDue('ahead', k, asked + 1)).toBe(true);
    expect(calls).toHaveBeenCalledTimes(2);
    await settled(calls, 1);
    // The next block starts when it was asked for, on the key's clock, and serves without a call.
    expect(Number(await redis.get(keys.rateLimit('ahead')))).toBeCloseTo(asked + blockSize(t) * t, 2);
    expect(limiter.takeDue('ahead', k, asked + PREFETCH_LATE_MS - 1)).toBe(true);
    expect(calls).toHaveBeenCalledTimes(2);
    calls.mockRestore();
  });

  it('a block fetched ahead starts where the current one ends and hands out no slot early', async () => {
    const limiter = createRateLimiter(redis, keys);
    // 2,000 per second: slots 0.505 ms apart, 9 to a block; the next is asked for when 2 are left.
    const k = spec('ahead-count', { max: 2000, perMs: 1000 });
    const t = 0.5 * SPACING_MARGIN;
    expect(blockSize(t)).toBe(9);
    const calls = vi.spyOn(redis, 'evalsha');
    const now = 10_100_000;
    expect(await limiter.acquire(k, 'c-0', now)).toEqual({ kind: 'go' });
    for (let i = 1; i <= 6; i++) {
      expect(limiter.takeDue('ahead-count', k, now + i * t)).toBe(true);
      await aTurn();
      expect(calls).toHaveBeenCalledTimes(i < 6 ? 1 : 2);
    }
    await settled(calls, 1);
    expect(limiter.takeDue('ahead-count', k, now + 7 * t)).toBe(true);
    expect(limiter.takeDue('ahead-count', k, now + 8 * t)).toBe(true);
    // The next block's first slot is the tenth: not before its time.
    expect(limiter.takeDue('ahead-count', k, now + 9 * t - 1.01)).toBe(false);
    expect(limiter.takeDue('ahead-count', k, now + 9 * t)).toBe(true);
    expect(calls).toHaveBeenCalledTimes(2);
    calls.mockRestore();
    expect(Number(await redis.get(keys.rateLimit('ahead-count')))).toBeCloseTo(now + 18 * t, 2);
  });

  it('takeDue never spends a slot that is not due, whatever block of another spacing is held ahead', async () => {
    const limiter = createRateLimiter(redis, keys);
    // Two actions on one key: 2,000 per second (blocks of 9) and 4,000 per second (blocks of 19).
    const a = spec('mixed', { max: 2000, perMs: 1000 });
    const b = spec('mixed', { max: 4000, perMs: 1000 });
    const ta = 0.5 * SPACING_MARGIN;
    expect(blockSize(0.25 * SPACING_MARGIN)).toBe(19);
    const calls = vi.spyOn(redis, 'evalsha');
    const now = 10_500_000;
    expect(await limiter.acquire(a, 'm-0', now)).toEqual({ kind: 'go' });
    // Six more of a's slots as they come due: the next block of a's spacing is fetched ahead.
    for (let i = 1; i <= 6; i++) expect(limiter.takeDue('mixed', a, now + i * ta)).toBe(true);
    await settled(calls, 1);
    // b's first job gets a block of b's spacing, starting after a's two blocks: not due for 4.5 ms.
    expect((await limiter.acquire(b, 'm-1', now + 4.6)).kind).toBe('wait');
    const asked = calls.mock.calls.length;
    // a's block held ahead is due, b's is not: takeDue says no and takes nothing.
    expect(limiter.takeDue('mixed', b, now + 4.7)).toBe(false);
    // So b's block still holds its 18 other slots for the jobs that wait for them, no call needed.
    for (let i = 0; i < 18; i++) expect((await limiter.acquire(b, `m-b-${i}`, now + 4.7)).kind).toBe('wait');
    expect(calls).toHaveBeenCalledTimes(asked);
    await limiter.acquire(b, 'm-b-last', now + 4.7);
    expect(calls).toHaveBeenCalledTimes(asked + 1);
    calls.mockRestore();
  });

  it('a block fetched ahead takes nothing when none can be had, and a pushBack drops one still on its way', async () => {
    const limiter = createRateLimiter(redis, keys);
    const k = spec('ahead-none', { max: 1_000_000, perMs: 1000 });
    const calls = vi.spyOn(redis, 'evalsha');
    const now = 10_200_000;
    expect(await limiter.acquire(k, 'n-0', now)).toEqual({ kind: 'go' });
    // Another process's reservation: no block can be had, and the call ahead takes no slot.
    await redis.zadd(keys.rateLimitSlots('ahead-none'), now + 60_000, 'elsewhere');
    const tat = await redis.get(keys.rateLimit('ahead-none'));
    expect(limiter.takeDue('ahead-none', k, now + PREFETCH_LATE_MS + 1)).toBe(true);
    await settled(calls, 1);
    expect(await redis.get(keys.rateLimit('ahead-none'))).toBe(tat);
    await redis.del(keys.rateLimitSlots('ahead-none'));

    const k2 = spec('ahead-pushed', { max: 1_000_000, perMs: 1000 });
    const other = createRateLimiter(redis, keys);
    expect(await other.acquire(k2, 'p-0', now)).toEqual({ kind: 'go' });
    expect(other.takeDue('ahead-pushed', k2, now + PREFETCH_LATE_MS + 1)).toBe(true);
    // The call for the next block leaves before the pushBack and brings a block (code 3)...
    await aTurn();
    const ahead = calls.mock.results.length - 1;
    await other.pushBack('ahead-pushed', now + 5000, now + PREFETCH_LATE_MS + 1);
    await settled(calls, ahead);
    expect(((await calls.mock.results[ahead]?.value) as number[])[0]).toBe(3);
    // ...which is dropped, the pushBack having come while it was on its way.
    // Neither block is used: the next job waits for the pause.
    expect(other.takeDue('ahead-pushed', k2, now + PREFETCH_LATE_MS + 2)).toBe(false);
    expect(slotAt(await other.acquire(k2, 'p-1', now + PREFETCH_LATE_MS + 2))).toBeGreaterThanOrEqual(now + 5000);
    calls.mockRestore();
  });

  it('a block read late counts from when it was read, never from before its first slot', async () => {
    // Each script call takes `ms` on the worker's clock: a busy event loop reads the answer late.
    const slowCalls = (ms: number) => {
      let reads = 0;
      return () => (reads++ % 2 === 0 ? 0 : ms);
    };
    const limiter = createLimiter(redis, keys, slowCalls(12));
    const k = spec('arrival', { max: 1_000_000, perMs: 1000 });
    const now = 10_300_000;
    expect(await limiter.acquire(k, 'a-0', now)).toEqual({ kind: 'go' });
    // Its slots were counted from `now`: LATE_TOLERANCE_MS + 10 later they would all be dropped.
    expect(limiter.takeDue('arrival', k, now + LATE_TOLERANCE_MS + 10)).toBe(true);
    // A key whose next slot is 3 ms away: the block read 2 ms later still starts at that slot.
    await redis.set(keys.rateLimit('arrival-ahead'), String(now + 3));
    const late = createLimiter(redis, keys, slowCalls(2));
    const d = await late.acquire(spec('arrival-ahead', { max: 1_000_000, perMs: 1000 }), 'a-1', now);
    expect(d).toEqual({ kind: 'wait', at: now + 3, waitMs: 1 });
    // Read 25 ms late, a block is moved MAX_ARRIVAL_SHIFT_MS at most: its slots are still dropped
    // LATE_TOLERANCE_MS after that, so none leaves more than their sum after its time.
    const capped = createLimiter(redis, keys, slowCalls(25));
    const kc = spec('arrival-cap', { max: 1_000_000, perMs: 1000 });
    expect(await capped.acquire(kc, 'a-2', now)).toEqual({ kind: 'go' });
    expect(capped.takeDue('arrival-cap', kc, now + 25)).toBe(true);
    expect(capped.takeDue('arrival-cap', kc, now + MAX_ARRIVAL_SHIFT_MS + LATE_TOLERANCE_MS + 1)).toBe(false);
  });

  it('leases at most max permits, re-grants a holder its own, and frees expired or released ones', async () => {
    const limiter = createRateLimiter(redis, keys);
    const now = 7_000_000;
    expect(await limiter.lease('lease', 2, 'a', now, 10_000)).toBe(true);
    expect(await limiter.lease('lease', 2, 'b', now, 10_000)).toBe(true);
    expect(await limiter.lease('lease', 2, 'c', now, 10_000)).toBe(false);
    // A crashed worker's rerun of the same job holds its permit again.
    expect(await limiter.lease('lease', 2, 'a', now + 1, 10_000)).toBe(true);
    await limiter.release('lease', 'b');
    expect(await limiter.lease('lease', 2, 'c', now + 2, 10_000)).toBe(true);
    expect(await limiter.lease('lease', 2, 'd', now + 3, 10_000)).toBe(false);
    // Leases of a worker that never released them run out by themselves.
    expect(await limiter.lease('lease', 2, 'd', now + 10_002, 10_000)).toBe(true);
  });
});

describe('circuit breaker', () => {
  const cfg: CircuitConfig = { failureRatio: 0.5, minRequests: 4, windowMs: 10_000, openMs: 5_000 };
  const probeLockMs = 60_000;

  it('stays closed under minRequests or under the ratio, and opens exactly at the ratio', async () => {
    const breaker = createCircuitBreaker(redis, keys);
    const t = 20_000;
    // 1 failure in 4: under the ratio.
    for (const failed of [true, false, false]) expect(await breaker.record('ratio-low', failed, false, t, cfg)).toBe('none');
    expect(await breaker.record('ratio-low', false, false, t, cfg)).toBe('none');
    expect(await breaker.check('ratio-low', t, probeLockMs)).toEqual({ kind: 'closed' });
    // 3 failures out of 3: over the ratio but under minRequests; the 4th request (a success) opens it at 3 of 4.
    for (const failed of [true, true, true]) expect(await breaker.record('ratio-hit', failed, false, t, cfg)).toBe('none');
    expect(await breaker.check('ratio-hit', t, probeLockMs)).toEqual({ kind: 'closed' });
    expect(await breaker.record('ratio-hit', false, false, t, cfg)).toBe('opened');
    // Exactly the ratio (2 of 4) opens too.
    for (const failed of [true, false, true]) await breaker.record('ratio-exact', failed, false, t, cfg);
    expect(await breaker.record('ratio-exact', false, false, t, cfg)).toBe('opened');
  });

  it('counts per window: failures of an earlier window do not add up with later ones', async () => {
    const breaker = createCircuitBreaker(redis, keys);
    const w0 = 30_000;
    for (let i = 0; i < 3; i++) await breaker.record('windows', true, false, w0 + 100, cfg);
    expect(await breaker.record('windows', true, false, w0 + cfg.windowMs + 100, cfg)).toBe('none');
    expect(await breaker.check('windows', w0 + cfg.windowMs + 100, probeLockMs)).toEqual({ kind: 'closed' });
    // Requests at different moments of one window do add up.
    const w2 = w0 + 3 * cfg.windowMs;
    for (const dt of [100, 2_000, 5_000]) expect(await breaker.record('windows-same', true, false, w2 + dt, cfg)).toBe('none');
    expect(await breaker.record('windows-same', true, false, w2 + cfg.windowMs - 1, cfg)).toBe('opened');
  });

  it('defers for openMs, then lets exactly one probe through; a failed probe re-opens, a good one closes', async () => {
    const breaker = createCircuitBreaker(redis, keys);
    const t = 50_000;
    for (let i = 0; i < 4; i++) await breaker.record('probe', true, false, t, cfg);
    expect(await breaker.check('probe', t + cfg.openMs - 1, probeLockMs)).toEqual({ kind: 'defer', until: t + cfg.openMs, state: 'open' });
    // Results that arrive while open (requests sent before it opened) change nothing.
    expect(await breaker.record('probe', false, false, t + 10, cfg)).toBe('none');

    const reopenAt = t + cfg.openMs;
    expect(await breaker.check('probe', reopenAt, probeLockMs)).toEqual({ kind: 'probe' });
    // Every other caller while the probe is out is deferred, however many there are.
    for (let i = 0; i < 5; i++) {
      const d = await breaker.check('probe', reopenAt + i, probeLockMs);
      expect(d).toMatchObject({ kind: 'defer', state: 'half-open' });
    }
    // The probe failed: open again for a whole openMs from then.
    expect(await breaker.record('probe', true, true, reopenAt + 100, cfg)).toBe('none');
    expect(await breaker.check('probe', reopenAt + 100 + cfg.openMs - 1, probeLockMs)).toEqual({
      kind: 'defer',
      until: reopenAt + 100 + cfg.openMs,
      state: 'open',
    });
    // The next probe succeeds: closed, with fresh counters.
    const second = reopenAt + 100 + cfg.openMs;
    expect(await breaker.check('probe', second, probeLockMs)).toEqual({ kind: 'probe' });
    expect(await breaker.record('probe', false, true, second + 50, cfg)).toBe('closed');
    expect(await breaker.check('probe', second + 60, probeLockMs)).toEqual({ kind: 'closed' });
    for (let i = 0; i < 3; i++) expect(await breaker.record('probe', true, false, second + 70, cfg)).toBe('none');
  });

  it('readCircuitState says closed, open until openUntil, then half-open, and closed again after a good probe, changing nothing', async () => {
    const breaker = createCircuitBreaker(redis, keys);
    const state = (now: number) => readCircuitState(redis, keys, 'shown', now);
    const t = 70_000;
    expect(await state(t)).toBe('closed');
    for (let i = 0; i < 4; i++) await breaker.record('shown', true, false, t, cfg);
    expect(await state(t)).toBe('open');
    expect(await state(t + cfg.openMs - 1)).toBe('open');
    expect(await state(t + cfg.openMs)).toBe('half-open');
    // Reading took no probe: the first caller past openMs still gets it.
    expect(await breaker.check('shown', t + cfg.openMs, probeLockMs)).toEqual({ kind: 'probe' });
    expect(await state(t + cfg.openMs + 1)).toBe('half-open');
    expect(await breaker.record('shown', false, true, t + cfg.openMs + 2, cfg)).toBe('closed');
    expect(await state(t + cfg.openMs + 3)).toBe('closed');
  });
});
