import { describe, expect, it } from 'vitest';
import { AuthError, NetworkError, TimeoutError } from '../../src/errors/errors.js';
import {
  NETWORK_CODES,
  RETRY_AFTER_STATUSES,
  TIMEOUT_CODES,
  circuitFailure,
  classifyTransportError,
  isRetryableTokenStatus,
  parseRetryAfter,
} from '../../src/delivery/retry-policy.js';

/* The retry policy's tables and parsers, value by value (the outcome table is decide-outcome.test.ts). */

// Written out, not read from the module: a code dropped from its table must fail here.
const TIMEOUTS = ['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT'];
const NETWORK = [
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH',
  'HPE_INVALID_CONSTANT',
  'HPE_INVALID_HEADER_TOKEN',
];

describe('classifyTransportError', () => {
  it('has exactly these codes in its tables', () => {
    expect([...TIMEOUT_CODES].sort()).toEqual([...TIMEOUTS].sort());
    expect([...NETWORK_CODES].sort()).toEqual([...NETWORK].sort());
  });

  it.each(TIMEOUTS)('%s is a timeout, keeping its code and message', (code) => {
    const err = classifyTransportError(Object.assign(new Error(`boom ${code}`), { code }));
    expect(err).toBeInstanceOf(TimeoutError);
    expect(err).toMatchObject({ code, message: `boom ${code}`, retryable: true });
  });

  it.each(NETWORK)('%s is a network error', (code) => {
    const err = classifyTransportError(Object.assign(new Error('down'), { code }));
    expect(err).toBeInstanceOf(NetworkError);
    expect(err).toMatchObject({ code, retryable: true });
  });

  it('reads the code of a wrapped cause, and an AbortSignal timeout by its name', () => {
    expect(classifyTransportError({ message: 'x', cause: { code: 'ECONNRESET' } })).toMatchObject({
      code: 'ECONNRESET',
      reason: 'network',
    });
    expect(classifyTransportError(Object.assign(new Error('late'), { name: 'TimeoutError' }))).toBeInstanceOf(TimeoutError);
    expect(classifyTransportError('plain text')).toMatchObject({ code: 'UNKNOWN', message: 'plain text', reason: 'network' });
  });

  it('keeps a decision already made, itself or as the cause of a wrapper', () => {
    const auth = new AuthError('refused', false);
    expect(classifyTransportError(auth)).toBe(auth);
    expect(classifyTransportError({ message: 'wrapped', cause: auth })).toBe(auth);
  });
});

describe('parseRetryAfter', () => {
  const now = Date.parse('2026-11-30T12:00:00Z');
  it('takes delay seconds, surrounding space allowed, and the first of repeated headers', () => {
    expect(parseRetryAfter('120', now)).toBe(120_000);
    expect(parseRetryAfter(' 7 ', now)).toBe(7_000);
    expect(parseRetryAfter(['3', '9'], now)).toBe(3_000);
    expect(parseRetryAfter('0', now)).toBe(0);
  });
  it('takes an HTTP date, never negative', () => {
    expect(parseRetryAfter('Mon, 30 Nov 2026 12:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Mon, 30 Nov 2026 11:00:00 GMT', now)).toBe(0);
  });
  it('ignores what is neither', () => {
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter('', now)).toBeUndefined();
  });
});

describe('circuitFailure and Retry-After statuses', () => {
  it('counts 5xx (500 included) and 429 as failures, other statuses not', () => {
    for (const s of [500, 502, 503, 504, 599, 429]) expect(circuitFailure(s, undefined)).toBe(true);
    for (const s of [200, 400, 401, 404, 422, 499]) expect(circuitFailure(s, undefined)).toBe(false);
  });
  it('honours Retry-After on 429 and 503 only', () => {
    expect([...RETRY_AFTER_STATUSES].sort()).toEqual([429, 503]);
    // Seconds only as digits from end to end.
    expect(parseRetryAfter('x5', 0)).toBeUndefined();
    expect(parseRetryAfter('5x', 0)).toBeUndefined();
  });
});

describe('isRetryableTokenStatus', () => {
  it('retries a token endpoint that is down or busy, not one that refuses the credentials or the request', () => {
    for (const s of [500, 501, 502, 503, 504, 599, 408, 429]) expect(isRetryableTokenStatus(s), String(s)).toBe(true);
    for (const s of [300, 400, 401, 403, 404, 409, 422, 425, 499]) expect(isRetryableTokenStatus(s), String(s)).toBe(false);
  });
});
