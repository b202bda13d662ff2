import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { propertyRuns } from '../support/property-runs.js';
import { ConfigError, hashTaggedPrefix, loadConfig } from '../../src/config/config.js';
import { partitionIndex, relayKeys } from '../../src/redis/redis-connection.js';
import { createSharedConcurrency, type ConcurrencyTarget } from '../../src/delivery/shared-concurrency.js';

/** The part of a key Redis Cluster hashes: the first non-empty {...}, else the whole key. */
function hashTag(key: string): string {
  const open = key.indexOf('{');
  const close = key.indexOf('}', open + 1);
  return open >= 0 && close > open + 1 ? key.slice(open + 1, close) : key;
}

describe('key names with QUEUE_PARTITIONS', () => {
  it('keeps every name of one partition as it was: one hash tag, results at {prefix}:results', () => {
    const k = relayKeys(hashTaggedPrefix('ar'));
    expect(k.partitions).toHaveLength(1);
    expect([k.bullPrefix, k.results, k.dlq, k.dlqRecords, k.jobKey('j1')]).toEqual([
      '{ar}',
      '{ar}:results',
      '{ar}:dlq',
      '{ar}:dlq:records',
      '{ar}:deliveries:j1',
    ]);
    expect([k.rateLimit('api:443'), k.rateLimitPause('api:443'), k.circuit('api:443')]).toEqual([
      '{ar}:rl:api:443',
      '{ar}:rl:api:443:pause',
      '{ar}:cb:api:443',
    ]);
    expect(k.partitionFor('anything')).toBe(k.partitions[0]);
  });

  it('gives each partition, rate-limit key and circuit a hash tag of its own; one script keeps to one', () => {
    const k = relayKeys(hashTaggedPrefix('ar'), 3);
    expect(k.partitions.map((p) => p.results)).toEqual(['{ar:p0}:results', '{ar:p1}:results', '{ar:p2}:results']);
    for (const p of k.partitions) {
      // The FINISH script's keys: job hash, results, dead-letter index and records.
      expect(new Set([p.jobKey('j'), p.results, p.dlq, p.dlqRecords, `${p.bullPrefix}:${p.queueName}:wait`].map(hashTag))).toEqual(
        new Set([`ar:p${p.index}`]),
      );
    }
    // The GCRA script's keys, the lease and the circuit's keys (probe, window) share their key's tag.
    const limitKeys = [k.rateLimit('api:443'), k.rateLimitSlots('api:443'), k.rateLimitPause('api:443'), k.rateLimitLeases('api:443')];
    expect(new Set(limitKeys.map(hashTag))).toEqual(new Set(['ar:rl:api:443']));
    expect(new Set([k.circuit('x'), `${k.circuit('x')}:probe`, `${k.circuit('x')}:w:7`].map(hashTag))).toEqual(new Set(['ar:cb:x']));
    // Action definitions stay under the deployment's tag.
    expect(hashTag(k.actions)).toBe('ar');
    // The top-level names are partition 0's.
    expect(k.results).toBe('{ar:p0}:results');
  });

  it('derives partition tags from a tag the prefix already carries', () => {
    const k = relayKeys(hashTaggedPrefix('app{x}y'), 2);
    expect(k.partitions.map((p) => p.bullPrefix)).toEqual(['app{x:p0}y', 'app{x:p1}y']);
    expect(k.rateLimit('k')).toBe('app{x:rl:k}y');
  });

  it('routes a rate-limit key by FNV-1a 32: the published test vectors, stable, spread', () => {
    // FNV-1a 32-bit of "", "a" and "foobar" (modulo 2^32 is the hash itself).
    expect(partitionIndex('', 2 ** 32)).toBe(0x811c9dc5);
    expect(partitionIndex('a', 2 ** 32)).toBe(0xe40c292c);
    expect(partitionIndex('foobar', 2 ** 32)).toBe(0xbf9cf968);
    const k = relayKeys(hashTaggedPrefix('ar'), 3);
    const counts = [0, 0, 0];
    for (let i = 0; i < 3000; i++) {
      const key = `api-${i}.example:443`;
      const p = k.partitionFor(key);
      expect(relayKeys(hashTaggedPrefix('other'), 3).partitionFor(key).index).toBe(p.index);
      counts[p.index] = (counts[p.index] ?? 0) + 1;
    }
    for (const c of counts) expect(c).toBeGreaterThan(850);
  });
});

describe('QUEUE_PARTITIONS and ACTION_RELAY_PREFIX settings', () => {
  it('defaults to 1 and refuses values out of range, naming the variable', () => {
    expect(loadConfig({}).QUEUE_PARTITIONS).toBe(1);
    expect(loadConfig({ QUEUE_PARTITIONS: '8' }).QUEUE_PARTITIONS).toBe(8);
    expect(() => loadConfig({ QUEUE_PARTITIONS: '0' })).toThrow(/QUEUE_PARTITIONS/);
    expect(() => loadConfig({ QUEUE_PARTITIONS: 'many' })).toThrow(ConfigError);
  });

  it('refuses a prefix whose hash tag partitions could not derive from', () => {
    expect(() => loadConfig({ ACTION_RELAY_PREFIX: 'a{b}{c}' })).toThrow(/ACTION_RELAY_PREFIX/);
    expect(() => loadConfig({ ACTION_RELAY_PREFIX: 'a{}' })).toThrow(/ACTION_RELAY_PREFIX/);
    expect(() => loadConfig({ ACTION_RELAY_PREFIX: 'a{b' })).toThrow(/ACTION_RELAY_PREFIX/);
    expect(loadConfig({ ACTION_RELAY_PREFIX: 'a{b}c' }).ACTION_RELAY_PREFIX).toBe('a{b}c');
  });
});

const nextTurn = () => new Promise((r) => setImmediate(r));

/** Partitions' workers as BullMQ runs them: a job starts only while running < concurrency. */
function simulate(budget: number, partitions: number) {
  const shared = createSharedConcurrency(budget, partitions);
  const targets: ConcurrencyTarget[] = Array.from({ length: partitions }, (_, i) => ({ concurrency: shared.initial(i) }));
  targets.forEach((t, i) => shared.attach(i, t));
  const pending: { partition: number; finish: () => void; done: Promise<unknown> }[] = [];
  const tryStart = (i: number): boolean => {
    if ((shared.running()[i] ?? 0) >= (targets[i] as ConcurrencyTarget).concurrency) return false;
    let finish = () => undefined as void;
    const job = shared.track(i, () => new Promise<void>((r) => (finish = r)));
    pending.push({ partition: i, finish: () => finish(), done: job() });
    return true;
  };
  const finishOne = async (k: number) => {
    const [job] = pending.splice(k % pending.length, 1);
    job?.finish();
    await job?.done;
    await nextTurn();
  };
  const total = () => shared.running().reduce((a, b) => a + b, 0);
  return { shared, targets, tryStart, finishOne, total, pending };
}

describe('the concurrency budget shared by the partitions of a worker process', () => {
  it('lets one busy partition take the whole budget while the others idle, keeping a slot for each of them', async () => {
    const s = simulate(64, 4);
    while (s.tryStart(0));
    expect(s.shared.running()[0]).toBe(64);
    // The others still get one each.
    for (const i of [1, 2, 3]) expect(s.tryStart(i)).toBe(true);
    expect(s.total()).toBe(67);
    // Full: nobody starts more until jobs end and the total is under the budget again.
    for (const i of [0, 1, 2, 3]) expect(s.tryStart(i)).toBe(false);
    for (let k = 0; k < 3; k++) await s.finishOne(0);
    expect(s.total()).toBe(64);
    for (const i of [0, 1, 2, 3]) expect(s.tryStart(i)).toBe(false);
    await s.finishOne(0);
    expect(s.tryStart(2)).toBe(true);
  });

  it('gives back the slot of a job that throws', async () => {
    const shared = createSharedConcurrency(8, 2);
    const failing = shared.track(1, () => Promise.reject(new Error('boom')));
    await expect(failing()).rejects.toThrow('boom');
    // Still counted until BullMQ has decided on fetch-next, then given back.
    expect(shared.running()).toEqual([0, 1]);
    await nextTurn();
    expect(shared.running()).toEqual([0, 0]);
  });

  it('never has more than budget + partitions - 1 in flight, and every partition may always run one', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 80 }),
        fc.integer({ min: 2, max: 12 }),
        fc.array(fc.tuple(fc.boolean(), fc.nat(100)), { maxLength: 300 }),
        async (budget, partitions, steps) => {
          const s = simulate(budget, partitions);
          for (const [start, n] of steps) {
            if (start || s.pending.length === 0) s.tryStart(n % partitions);
            else await s.finishOne(n);
            expect(s.total()).toBeLessThanOrEqual(budget + partitions - 1);
            s.shared.running().forEach((r, i) => {
              if (r === 0) expect(s.targets[i]?.concurrency).toBeGreaterThanOrEqual(1);
            });
          }
        },
      ),
      { numRuns: propertyRuns(200) },
    );
  });
});
