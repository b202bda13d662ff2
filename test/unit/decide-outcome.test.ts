import { describe, expect, it } from 'vitest';
import { decideOutcome, type AttemptDecision } from '../../src/delivery/attempt/decide-outcome.js';
import { RETRY_DEFAULTS, circuitFailure, shouldRefreshToken, type RetryPolicy } from '../../src/delivery/retry-policy.js';
import { parseActionDefinition } from '../../src/actions/compile-action.js';
import {
  BlockedDestinationError,
  HttpStatusError,
  InvalidParamsError,
  NetworkError,
  TimeoutError,
  type RelayError,
} from '../../src/errors/errors.js';

const NOW = 1_800_000_000_000;
const policy = (over: Partial<RetryPolicy> = {}, maxDelayMs = 10_000): { definition: { retry: RetryPolicy } } => ({
  definition: {
    retry: { maxAttempts: 3, backoff: { type: 'exponential', delayMs: 1000, maxDelayMs }, retryOn: RETRY_DEFAULTS.retryOn, ...over },
  },
});

const http503 = (retryAfterMs?: number) => new HttpStatusError(503, true, retryAfterMs);

interface Row {
  name: string;
  error: RelayError;
  attempt: number;
  action: { definition: { retry: RetryPolicy } } | null;
  jitter?: number;
  expected: AttemptDecision;
}

// retryable × attempts left × Retry-After × maxDelay × known action (whose key can be paused).
const table: Row[] = [
  {
    name: 'retryable, attempts left: full-jitter backoff',
    error: new NetworkError('ECONNRESET', 'reset'),
    attempt: 2,
    action: policy(),
    jitter: 0.5,
    expected: { kind: 'retry', delayMs: 1000, maxAttempts: 3, pauseUntil: undefined },
  },
  {
    name: 'retryable, last attempt: dead',
    error: new TimeoutError('UND_ERR_HEADERS_TIMEOUT', 'slow'),
    attempt: 3,
    action: policy(),
    expected: { kind: 'dead', maxAttempts: 3, pauseUntil: undefined },
  },
  {
    name: 'not retryable, attempts left: dead at once',
    error: new HttpStatusError(404, false, undefined),
    attempt: 1,
    action: policy(),
    expected: { kind: 'dead', maxAttempts: 3, pauseUntil: undefined },
  },
  {
    name: 'Retry-After above the backoff raises the delay and pauses the key',
    error: http503(4000),
    attempt: 1,
    action: policy(),
    jitter: 0.5,
    expected: { kind: 'retry', delayMs: 4000, maxAttempts: 3, pauseUntil: NOW + 4000 },
  },
  {
    name: 'Retry-After below the backoff keeps the backoff',
    error: http503(100),
    attempt: 2,
    action: policy(),
    jitter: 0.9,
    expected: { kind: 'retry', delayMs: 1800, maxAttempts: 3, pauseUntil: NOW + 100 },
  },
  {
    name: 'Retry-After beyond maxDelay: delay and pause both capped',
    error: http503(86_400_000),
    attempt: 1,
    action: policy({}, 30_000),
    jitter: 0,
    expected: { kind: 'retry', delayMs: 30_000, maxAttempts: 3, pauseUntil: NOW + 30_000 },
  },
  {
    name: 'Retry-After on the last attempt: dead, but the key still pauses',
    error: http503(2000),
    attempt: 3,
    action: policy(),
    expected: { kind: 'dead', maxAttempts: 3, pauseUntil: NOW + 2000 },
  },
  {
    name: 'Retry-After with no known action: no key to pause, defaults apply',
    error: http503(2000),
    attempt: 1,
    action: null,
    jitter: 0,
    expected: { kind: 'retry', delayMs: 2000, maxAttempts: RETRY_DEFAULTS.maxAttempts, pauseUntil: undefined },
  },
  {
    name: 'unknown action, fault of our own: retried under the default policy',
    error: new NetworkError('EINTERNAL', 'boom'),
    attempt: RETRY_DEFAULTS.maxAttempts - 1,
    action: null,
    jitter: 0.25,
    expected: {
      kind: 'retry',
      delayMs: Math.floor(
        0.25 * Math.min(RETRY_DEFAULTS.backoff.maxDelayMs, RETRY_DEFAULTS.backoff.delayMs * 2 ** (RETRY_DEFAULTS.maxAttempts - 2)),
      ),
      maxAttempts: RETRY_DEFAULTS.maxAttempts,
      pauseUntil: undefined,
    },
  },
  {
    name: 'unknown action, default attempts used up: dead',
    error: new NetworkError('EINTERNAL', 'boom'),
    attempt: RETRY_DEFAULTS.maxAttempts,
    action: null,
    expected: { kind: 'dead', maxAttempts: RETRY_DEFAULTS.maxAttempts, pauseUntil: undefined },
  },
  {
    name: 'invalid params never retry, even with attempts left',
    error: new InvalidParamsError([{ path: 'params.email', message: 'required' }]),
    attempt: 1,
    action: policy({ maxAttempts: 50 }),
    expected: { kind: 'dead', maxAttempts: 50, pauseUntil: undefined },
  },
  {
    name: 'fixed backoff waits delayMs whatever the jitter',
    error: new NetworkError('ECONNREFUSED', 'refused'),
    attempt: 2,
    action: policy({ backoff: { type: 'fixed', delayMs: 700, maxDelayMs: 10_000 } }),
    jitter: 0.01,
    expected: { kind: 'retry', delayMs: 700, maxAttempts: 3, pauseUntil: undefined },
  },
  {
    name: 'maxAttempts 1: the first failure is final',
    error: new NetworkError('ECONNRESET', 'reset'),
    attempt: 1,
    action: policy({ maxAttempts: 1 }),
    expected: { kind: 'dead', maxAttempts: 1, pauseUntil: undefined },
  },
];

describe('decideOutcome', () => {
  it.each(table)('$name', ({ error, attempt, action, jitter, expected }) => {
    expect(decideOutcome(error, { number: attempt, jitter: jitter ?? 0.5 }, action, NOW)).toEqual(expected);
  });

  it('is a pure function: the same facts give the same decision', () => {
    const args = [http503(1500), { number: 2, jitter: 0.3 }, policy(), NOW] as const;
    expect(decideOutcome(...args)).toEqual(decideOutcome(...args));
  });

  it('reads the defaults the definition schema fills in', () => {
    const def = parseActionDefinition({ id: 'a', name: 'a', endpoint: { url: 'https://example.test/x', method: 'POST' } });
    expect(def.retry).toEqual({ ...RETRY_DEFAULTS, backoff: { ...RETRY_DEFAULTS.backoff }, retryOn: [...RETRY_DEFAULTS.retryOn] });
    // The schema hands each definition its own copy: editing one cannot change the defaults.
    def.retry.retryOn.push(599);
    expect(RETRY_DEFAULTS.retryOn).not.toContain(599);
  });
});

// The circuit's notion of failure, beside the retry decision it often goes with.
describe('circuitFailure', () => {
  const cases: [string, number | undefined, unknown, boolean | undefined][] = [
    ['2xx is health', 200, undefined, false],
    ['4xx other than 429 is the caller, not the third party', 404, undefined, false],
    ['401 is not a failure', 401, undefined, false],
    ['429 is a failure', 429, undefined, true],
    ['5xx is a failure', 503, undefined, true],
    ['no answer (timeout) is a failure', undefined, new TimeoutError('ETIMEDOUT', 'slow'), true],
    ['no answer (network) is a failure', undefined, new NetworkError('ECONNREFUSED', 'refused'), true],
    ['an egress refusal says nothing of the third party', undefined, new BlockedDestinationError('blocked'), undefined],
    ['an unexpected fault before an answer counts as no answer', undefined, new Error('boom'), true],
  ];
  it.each(cases)('%s', (_name, status, err, expected) => {
    expect(circuitFailure(status, err)).toBe(expected);
  });

  it('refreshes a token only on a 401 to a request that carried one', () => {
    expect(shouldRefreshToken(401, 'tok')).toBe(true);
    expect(shouldRefreshToken(401, undefined)).toBe(false);
    expect(shouldRefreshToken(403, 'tok')).toBe(false);
  });
});
