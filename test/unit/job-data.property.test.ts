import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { propertyRuns } from '../support/property-runs.js';
import { jobDataSchema, readJobData } from '../../src/queue/job-schema.js';

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
