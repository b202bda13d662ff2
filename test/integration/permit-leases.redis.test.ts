import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config/config.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import { createRateLimiter } from '../../src/delivery/rate-limiter.js';
import { removePrefixKeys, testConfig, testContext } from '../support/harness.js';

/*
 * maxConcurrent leases of one key, as two actions sharing the key (the default key
 * is the endpoint's host:port) with different timeouts would take them.
 */

let config: Config;
let ctx: RelayContext;

beforeAll(async () => {
  config = testConfig();
  ctx = await testContext(config);
});

afterAll(async () => {
  await ctx.close();
  await removePrefixKeys(config);
});

describe('maxConcurrent leases of a shared key', () => {
  it('a short lease taken after a long one does not drop the long one (maxConcurrent 2)', async () => {
    const limiter = createRateLimiter(ctx.redis, ctx.keys);
    const key = 'shared-host:443';
    const now = Date.now();
    // Action A (timeoutMs 30 s: lease 95 s) has a request in flight.
    expect(await limiter.lease(key, 2, 'job-a', now, 95_000)).toBe(true);
    // Action B (timeoutMs 100 ms: lease 5.3 s) sends one request and ends it.
    expect(await limiter.lease(key, 2, 'job-b', now, 300)).toBe(true);
    await limiter.release(key, 'job-b');
    await new Promise((r) => setTimeout(r, 500));
    // A's request is still in flight: one permit is left, not two.
    const c = await limiter.lease(key, 2, 'job-c', Date.now(), 95_000);
    const d = await limiter.lease(key, 2, 'job-d', Date.now(), 95_000);
    expect({ c, d }, 'job-a still holds its lease, so only one of c and d may get one').toEqual({ c: true, d: false });
  });
});
