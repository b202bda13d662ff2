import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { propertyRuns } from '../support/property-runs.js';
import { jobDataSchema, jobInputSchema, readJobData, readJobInput } from '../../src/queue/job-schema.js';

describe('readJobData', () => {
  it('accepts and refuses exactly what jobDataSchema does, and returns the same value', () => {
    const field = fc.oneof(
      fc.constant(undefined),
      fc.string(),
      fc.integer(),
      fc.constant(null),
      fc.array(fc.string()),
      fc.dictionary(fc.string(), fc.jsonValue()),
    );
    const data = fc.oneof(
      fc.record(
        { params: field, context: field, idempotencyKey: field, replayOf: field, traceparent: field, orderingKey: field, extra: field },
        { requiredKeys: [] },
      ),
      fc.jsonValue(),
    );
    fc.assert(
      fc.property(data, (raw) => {
        const zod = jobDataSchema.safeParse(raw);
        const hand = readJobData(raw);
        expect(hand.ok).toBe(zod.success);
        if (hand.ok && zod.success) expect(hand.value).toEqual(zod.data);
      }),
      { numRuns: propertyRuns(2000) },
    );
  });

  it('names the field at fault', () => {
    expect(readJobData({ params: {}, context: [] })).toEqual({ ok: false, path: 'job.data.context' });
    expect(readJobData({ params: {}, context: {}, idempotencyKey: 7 })).toEqual({ ok: false, path: 'job.data.idempotencyKey' });
    expect(readJobData({ params: {}, context: {}, traceparent: 1 })).toEqual({ ok: false, path: 'job.data.traceparent' });
    expect(readJobData('x')).toEqual({ ok: false, path: 'job.data' });
  });
});

describe('readJobInput', () => {
  class Params {
    a = 1;
  }
  const MAX_DELAY = 30 * 86_400_000;
  const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
  // Object literals (fast-check makes null-prototype dictionaries too, unless told not to).
  const dict = fc.dictionary(fc.string(), fc.jsonValue(), { noNullPrototype: true });
  /** A job that passes, its optional fields absent or good. */
  const goodJob = fc.record(
    {
      actionId: fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/),
      params: dict,
      context: dict,
      idempotencyKey: fc.stringMatching(/^[\x21-\x7e]([\x20-\x7e]{0,20}[\x21-\x7e])?$/),
      orderingKey: fc.string({ minLength: 1, maxLength: 20 }),
      traceparent: fc.constant(TRACEPARENT),
      delayMs: fc.integer({ min: 0, max: MAX_DELAY }),
    },
    { requiredKeys: ['actionId'] },
  );
  /** Values at and past each field's edges, and of every other kind, for any field. */
  const edge = fc.oneof(
    fc.constantFrom<unknown>(undefined, null, '', 0, -0, -1, 0.5, 2 ** 53, Number.NaN, Number.POSITIVE_INFINITY, [1, 2]),
    fc.constantFrom('a'.repeat(64), 'a'.repeat(65), 'bad id!', 'k'.repeat(256), 'k'.repeat(257), ' k', 'é'.repeat(128), 'é'.repeat(129)),
    fc.constantFrom(TRACEPARENT, '00-00000000000000000000000000000000-00f067aa0ba902b7-01', MAX_DELAY, MAX_DELAY + 1),
    fc.constant(JSON.parse('{"__proto__": {"x": 1}, "a": 2}') as unknown),
    fc.constant(Object.assign(Object.create(null) as object, { a: 1 })),
    fc.constant({ [Symbol('s')]: 1, a: 2 }),
    fc.constant(Object.defineProperty({ a: 1 }, 'hidden', { value: 2, enumerable: false })),
    fc.constant(new Params()),
    // zod judges a record by its constructor, and refuses an array whatever its prototype.
    fc.constant({ constructor: () => 1, a: 1 }),
    fc.constant({ constructor: 'x', a: 1 }),
    fc.constant(Object.setPrototypeOf(['x'], Object.prototype) as unknown),
    fc.constant(new Proxy({ a: 1 }, { has: () => false })),
    fc.constant(Object.defineProperty({}, 'a', { get: () => 1, enumerable: true })),
    fc.dictionary(fc.string(), fc.jsonValue()),
    fc.constantFrom('\ud800'.repeat(85), '\ud800'.repeat(86), 'a\n'),
    fc.string(),
    fc.double(),
    dict,
  );
  const keys = ['actionId', 'params', 'context', 'idempotencyKey', 'orderingKey', 'traceparent', 'delayMs', 'extra'] as const;
  /** A good job with up to two fields set to edge values. */
  const input = fc
    .tuple(goodJob, fc.array(fc.tuple(fc.constantFrom(...keys), edge), { maxLength: 2 }))
    .map(([job, changes]) => Object.assign({ ...job }, Object.fromEntries(changes)) as unknown);

  const sameAsZod = (raw: unknown, hand: ReturnType<typeof readJobInput>) => {
    const zod = jobInputSchema.safeParse(raw);
    expect(zod.success).toBe(true);
    if (!hand || !zod.success) return;
    // Strict: keys given as undefined, and the prototypes (a __proto__ copied as one) count.
    expect(hand).toStrictEqual(zod.data);
    expect(Object.getPrototypeOf(hand.params)).toBe(Object.getPrototypeOf(zod.data.params));
  };

  it('returns what jobInputSchema does whenever it takes a job as it came', () => {
    let taken = 0;
    // A Proxy whose `has` says no to every key: zod asks it, the hand check reads the values.
    const proxied = goodJob.map((job) => new Proxy(job, { has: () => false }) as unknown);
    fc.assert(
      fc.property(fc.oneof(input, proxied, fc.jsonValue(), fc.constant(new Params())), (raw) => {
        const hand = readJobInput(raw);
        if (hand === undefined) return;
        taken++;
        sameAsZod(raw, hand);
      }),
      { numRuns: propertyRuns(3000) },
    );
    expect(taken).toBeGreaterThan(0);
  });

  it('takes every job parsed from JSON that jobInputSchema accepts, and no other', () => {
    fc.assert(
      fc.property(input, (raw) => {
        const json: unknown = JSON.parse(JSON.stringify(raw));
        const hand = readJobInput(json);
        expect(hand !== undefined).toBe(jobInputSchema.safeParse(json).success);
        if (hand) sameAsZod(json, hand);
      }),
      { numRuns: propertyRuns(3000) },
    );
  });

  // Each field at its edge and one past it: drawn at random, a single value is rarely tried.
  it.each([
    ['actionId', 'a'.repeat(64), true],
    ['actionId', 'a'.repeat(65), false],
    ['idempotencyKey', 'k'.repeat(256), true],
    ['idempotencyKey', 'k'.repeat(257), false],
    ['orderingKey', 'é'.repeat(128), true],
    ['orderingKey', 'é'.repeat(129), false],
    ['delayMs', MAX_DELAY, true],
    ['delayMs', MAX_DELAY + 1, false],
    ['delayMs', -1, false],
  ])('%s %#: takes it exactly when jobInputSchema does', (field, v, accepted) => {
    const raw = { actionId: 'a', [field]: v };
    expect(jobInputSchema.safeParse(raw).success).toBe(accepted);
    expect(readJobInput(raw) !== undefined).toBe(accepted);
  });

  it('keeps an optional field given as undefined, as zod does', () => {
    const raw = { actionId: 'a', idempotencyKey: undefined, orderingKey: undefined, traceparent: undefined, delayMs: undefined };
    const zod = jobInputSchema.safeParse(raw);
    expect(Object.keys(zod.data ?? {})).toEqual([
      'actionId',
      'params',
      'context',
      'idempotencyKey',
      'orderingKey',
      'traceparent',
      'delayMs',
    ]);
    expect(readJobInput(raw)).toStrictEqual(zod.data);
  });

  it('copies params and context: a caller changing its objects after the call changes no job', () => {
    const params = { a: 1 };
    const read = readJobInput({ actionId: 'a', params, context: {} });
    params.a = 2;
    expect(read?.params).toEqual({ a: 1 });
  });
});
