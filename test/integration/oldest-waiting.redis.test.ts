import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { RelayContext } from '../../src/context/relay-context.js';
import type { Config } from '../../src/config/config.js';
import { createOldestWaitingProbe } from '../../src/metrics/oldest-waiting.js';
import { removePrefixKeys, testConfig, testContext } from '../support/harness.js';

let config: Config;
let ctx: RelayContext;

beforeAll(async () => {
  config = testConfig();
  ctx = await testContext(config);
});

beforeEach(async () => {
  await ctx.queue.obliterate({ force: true });
});

afterAll(async () => {
  await ctx.close();
  await removePrefixKeys(config);
});

// Job ids as the producer makes them (a bare word such as "delayed" would collide with BullMQ's keys).
const ids = {
  first: randomUUID(),
  second: randomUUID(),
  delayed: randomUUID(),
  live: randomUUID(),
  replay: randomUUID(),
  retried: randomUUID(),
};

describe('action_relay_oldest_waiting_seconds (no worker runs, so jobs stay waiting)', () => {
  it('is 0 on an empty queue, then the age of the job next in line, from its enqueue plus its delay', async () => {
    let clock = 0;
    const probe = createOldestWaitingProbe(ctx.redis, ctx.keys, () => clock);
    expect(await probe()).toBe(0);

    const t0 = 1_700_000_000_000;
    const first = await ctx.queue.add('a', {}, { jobId: ids.first, timestamp: t0 });
    await ctx.queue.add('a', {}, { jobId: ids.second, timestamp: t0 + 50_000 });
    clock = t0 + 70_000;
    // FIFO: the first job is next in line, not the newest one.
    expect(await probe()).toBe(70);

    // A delayed job counts from when its delay ended, not from its enqueue.
    await first.remove();
    await ctx.queue.remove(ids.second);
    const delayed = await ctx.queue.add('a', {}, { jobId: ids.delayed, timestamp: t0, delay: 30_000 });
    expect(await probe()).toBe(0); // still in the delayed set: not waiting
    await delayed.promote();
    expect(await ctx.queue.getJobState(ids.delayed)).toBe('waiting');
    expect(await probe()).toBe(40);
  });

  it('takes the older of the FIFO head and the prioritized head (replays)', async () => {
    const t0 = 1_700_000_000_000;
    await ctx.queue.add('a', {}, { jobId: ids.live, timestamp: t0 + 10_000 });
    await ctx.queue.add('a', {}, { jobId: ids.replay, timestamp: t0, priority: 5 });
    const probe = createOldestWaitingProbe(ctx.redis, ctx.keys, () => t0 + 60_000);
    expect(await probe()).toBe(60);
    await ctx.queue.remove(ids.replay);
    expect(await probe()).toBe(50);
  });

  it('counts a job that already ran (retried or deferred) from the first scrape that saw it next in line', async () => {
    const t0 = 1_700_000_000_000;
    let clock = t0 + 600_000;
    await ctx.queue.add('a', {}, { jobId: ids.retried, timestamp: t0 });
    // What BullMQ leaves on a job that ran, failed and was promoted back to wait.
    await ctx.redis.hset(ctx.keys.jobKey(ids.retried), 'processedOn', String(t0 + 1000), 'delay', '0');
    const probe = createOldestWaitingProbe(ctx.redis, ctx.keys, () => clock);
    expect(await probe()).toBe(0);
    clock += 45_000;
    expect(await probe()).toBe(45);
    // A job that ran after the probe's first sight of it counts from its last start.
    await ctx.redis.hset(ctx.keys.jobKey(ids.retried), 'processedOn', String(clock - 5000));
    expect(await probe()).toBe(5);
  });
});
