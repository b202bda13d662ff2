import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config/config.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import { ValidationError } from '../../src/errors/errors.js';
import { createProducer } from '../../src/queue/producer.js';
import { removePrefixKeys, testConfig, testContext } from '../support/harness.js';

/*
 * The producer (the library behind POST /v1/jobs and /v1/jobs/batch) with input JSON cannot carry,
 * and a batch in which one job fails for a reason other than its content.
 * No worker runs: enqueued jobs stay where they were put.
 */

let config: Config;
let ctx: RelayContext;

beforeAll(async () => {
  config = testConfig();
  ctx = await testContext(config);
  await ctx.store.put({ id: 'ok', name: 'ok', endpoint: { url: 'http://127.0.0.1:9', method: 'POST' }, body: {} });
});

afterAll(async () => {
  await ctx?.close();
  await removePrefixKeys(config);
});

/** Jobs waiting an hour: they stay in the delayed set whatever else happens. */
const delayed = () => ctx.queues.partitions[0]!.queue.getDelayedCount();

describe('a value JSON cannot carry (a BigInt, a cycle)', () => {
  it('enqueue throws a ValidationError naming the field ("not serializable as JSON"), not a TypeError', async () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    for (const [input, path] of [
      [{ actionId: 'ok', params: {}, context: { amount: 10n } }, 'context'],
      [{ actionId: 'ok', params: cyclic }, 'params'],
    ] as const) {
      const err = await ctx.producer.enqueue(input as never).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ValidationError);
      expect((err as ValidationError).problems).toEqual([{ path, message: expect.stringContaining('not serializable as JSON') }]);
    }
  });

  it('enqueueMany answers a validation error for that job alone, and enqueues the others', async () => {
    const before = await delayed();
    const results = await ctx.producer.enqueueMany([
      { actionId: 'ok', params: {}, delayMs: 3_600_000 },
      { actionId: 'ok', params: {}, context: { amount: 10n } },
    ]);
    expect(results).toEqual([
      { jobId: expect.any(String), deduplicated: false },
      {
        error: expect.objectContaining({
          code: 'validation_failed',
          details: [{ path: 'jobs[1].context', message: expect.stringContaining('not serializable as JSON') }],
        }),
      },
    ]);
    expect((await delayed()) - before).toBe(1);
  });
});

describe('a batch in which a job fails for another reason than its content', () => {
  it('enqueueMany throws before adding any job, so that a retried batch enqueues nothing twice', async () => {
    // A store whose read of one action fails, as a Redis error would.
    const store = {
      ...ctx.store,
      getCompiled: (id: string) => (id === 'broken' ? Promise.reject(new Error('READONLY simulated')) : ctx.store.getCompiled(id)),
    } as typeof ctx.store;
    const producer = createProducer({ queues: ctx.queues, store, ordering: ctx.ordering, idempotencyTtlMs: 60_000 });
    const before = await delayed();
    const thrown = await producer
      .enqueueMany([
        { actionId: 'ok', params: {}, delayMs: 3_600_000 },
        { actionId: 'broken', params: {}, delayMs: 3_600_000 },
        { actionId: 'ok', params: {}, context: { amount: 10n } },
      ])
      .then(
        () => null,
        (e: unknown) => e,
      );
    expect(String(thrown)).toContain('READONLY simulated');
    expect((await delayed()) - before).toBe(0);
  });
});
