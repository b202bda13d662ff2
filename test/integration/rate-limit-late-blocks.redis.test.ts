import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, inject, it } from 'vitest';
import {
  LATE_TOLERANCE_MS,
  MAX_ARRIVAL_SHIFT_MS,
  blockSize,
  createRateLimiter,
  slotSpacing,
  type RateDecision,
} from '../../src/delivery/rate-limiter.js';
import { relayKeys } from '../../src/redis/redis-connection.js';

// Rate-limit slots handed out in blocks (BLOCK_SPAN_MS, MAX_ARRIVAL_SHIFT_MS). The GCRA script
// only reads the time its callers pass, so two worker processes are simulated on one synthetic
// clock, deterministically: process A reads the answer to its block call 30 ms after it was sent
// (a busy event loop), process B is on time. A's whole block then leaves at once, up to 30 ms after
// its slots, while B uses the slots after them on time. docs/delivery.md#rate-limits states the
// bound that follows: a window of perMs sees at most max + 1 requests plus the slots that fit in
// the 30 ms a request may leave after its slot.

const prefix = `{late-blocks-${randomUUID().slice(0, 8)}}`;
const redis = new Redis(inject('redisUrl'));
afterAll(async () => {
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (found.length > 0) await redis.unlink(...found);
  } while (cursor !== '0');
  await redis.quit();
});

describe('rate-limit blocks over two worker processes', () => {
  it('keeps a window of perMs within the documented bound when one process reads its block late (max 100 per 100 ms, blocks of 4)', async () => {
    const keys = relayKeys(prefix);
    const limit = { max: 100, perMs: 100, maxWaitMs: 60_000 };
    const spec = { key: 'host:1', ...limit };
    expect(blockSize(slotSpacing(limit))).toBe(4);
    const T0 = Date.now();
    const sends: { at: number; by: string }[] = [];

    // Process A: its block call leaves at T0; the answer is read 30 ms later (clock: 0, then 30).
    const aTimes = [0, 30];
    const A = createRateLimiter(redis, keys, () => aTimes.shift() ?? 30);
    const first = await A.acquire(spec, 'a-0', T0);
    const aNow = T0 + 30;
    expect(first).toEqual({ kind: 'go' });
    sends.push({ at: aNow, by: 'A' });

    // Process B, on time, one job per millisecond from T0 + 4 to T0 + 200: each takes a due slot of
    // its block, or asks (block call or one slot), and sends at the slot it was given.
    const B = createRateLimiter(redis, keys, () => 0);
    for (let now = T0 + 4; now < T0 + 200; now += 1) {
      if (B.takeDue(spec.key, limit, now)) {
        sends.push({ at: now, by: 'B' });
      } else {
        const d: RateDecision = await B.acquire(spec, `b-${now}`, now);
        if (d.kind === 'go') sends.push({ at: now, by: 'B' });
        else if (d.kind === 'wait') sends.push({ at: d.at, by: 'B' });
      }
      // Lets a block asked for in the background come in.
      await new Promise((r) => setImmediate(r));
    }

    // A's other jobs at T0 + 30 take the rest of A's block: each slot is due (its slots were moved
    // 15 ms later, and each is then used within LATE_TOLERANCE_MS).
    for (let i = 0; i < 8; i++) if (A.takeDue(spec.key, limit, aNow)) sends.push({ at: aNow, by: 'A' });

    // The busiest window of perMs.
    const times = sends.map((s) => s.at).sort((x, y) => x - y);
    let most = 0;
    let from = 0;
    for (let i = 0; i < times.length; i++) {
      let n = 0;
      while (i + n < times.length && (times[i + n] as number) < (times[i] as number) + limit.perMs) n++;
      if (n > most) [most, from] = [n, (times[i] as number) - T0];
    }
    const fromA = sends.filter((s) => s.by === 'A').map((s) => s.at - T0);
    // Some of A's requests did leave late, together: the case the bound is for.
    expect(fromA.filter((at) => at === 30).length).toBeGreaterThan(1);
    const bound = limit.max + 1 + Math.floor((MAX_ARRIVAL_SHIFT_MS + LATE_TOLERANCE_MS) / slotSpacing(limit));
    expect(most, `requests in the busiest ${limit.perMs} ms (from T0+${from}); A sent at ${JSON.stringify(fromA)}`).toBeLessThanOrEqual(
      bound,
    );
  });
});
