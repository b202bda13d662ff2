import { describe, expect, it } from 'vitest';
import {
  backoffDelay,
  classifyTransportError,
  isRetryableStatus,
  nextAttemptDelay,
  parseRetryAfter,
  DEFAULT_RETRY_ON,
} from '../../src/delivery/retry-policy.js';

const exp = { type: 'exponential' as const, delayMs: 1000, maxDelayMs: 5000 };

describe('retry policy', () => {
  it('uses full jitter over a capped exponential step', () => {
    const half = () => 0.5;
    expect([1, 2, 3, 4, 5].map((n) => backoffDelay(n, exp, half))).toEqual([500, 1000, 2000, 2500, 2500]);
    expect(backoffDelay(3, exp, () => 0)).toBe(0);
    expect(backoffDelay(3, exp, () => 0.999)).toBe(3996);
  });

  it('waits exactly delayMs with fixed backoff', () => {
    const fixed = { type: 'fixed' as const, delayMs: 700, maxDelayMs: 5000 };
    expect([1, 2, 7].map((n) => backoffDelay(n, fixed, () => 0.1))).toEqual([700, 700, 700]);
  });

  it('raises the delay to Retry-After, capped at maxDelayMs', () => {
    expect(nextAttemptDelay(1, exp, 2000, () => 0.5)).toBe(2000);
    expect(nextAttemptDelay(4, exp, 100, () => 1)).toBe(5000);
    expect(nextAttemptDelay(1, exp, 60_000, () => 0.5)).toBe(5000);
    expect(nextAttemptDelay(1, exp, undefined, () => 0.5)).toBe(500);
  });

  it('parses Retry-After as seconds or an HTTP date', () => {
    const now = Date.parse('2026-11-28T12:00:00Z');
    expect(parseRetryAfter('2', now)).toBe(2000);
    expect(parseRetryAfter(['7'], now)).toBe(7000);
    expect(parseRetryAfter('Sat, 28 Nov 2026 12:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Sat, 28 Nov 2026 11:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
  });

  it('retries the default statuses only, and classifies transport errors', () => {
    expect([408, 425, 429, 500, 502, 503, 504].every((s) => isRetryableStatus(s, DEFAULT_RETRY_ON))).toBe(true);
    expect([400, 401, 403, 404, 422, 501].some((s) => isRetryableStatus(s, DEFAULT_RETRY_ON))).toBe(false);
    const t = classifyTransportError(Object.assign(new Error('headers'), { code: 'UND_ERR_HEADERS_TIMEOUT' }));
    expect([t.reason, t.retryable, t.code]).toEqual(['timeout', true, 'UND_ERR_HEADERS_TIMEOUT']);
    const n = classifyTransportError(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }));
    expect([n.reason, n.retryable]).toEqual(['network', true]);
  });
});
