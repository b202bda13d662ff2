import { InvalidParamsError, NetworkError, RelayError, TimeoutError } from '../errors/errors.js';

/**
 * The retry policy in one place: the defaults of an action's `retry` block (the definition
 * schema reads them from here), which statuses and transport errors retry, how long to wait,
 * when a 401 earns a token refresh and what the circuit breaker counts as a failure.
 * Statuses not in `retry.retryOn` (400, 401 after a token refresh, 403, 404, 422, ...) dead-letter at once.
 */
export const DEFAULT_RETRY_ON: readonly number[] = Object.freeze([408, 425, 429, 500, 502, 503, 504]);

/** How the delay between attempts grows (an action's `retry.backoff`). */
export interface BackoffPolicy {
  type: 'exponential' | 'fixed';
  delayMs: number;
  maxDelayMs: number;
}

/** An action's `retry` block. */
export interface RetryPolicy {
  maxAttempts: number;
  backoff: BackoffPolicy;
  retryOn: readonly number[];
}

/** The `retry` block of an action that sets none (each field also defaults alone). */
export const RETRY_DEFAULTS = Object.freeze({
  /** Total attempts, first one included. */
  maxAttempts: 4,
  backoff: Object.freeze({ type: 'exponential' as const, delayMs: 1000, maxDelayMs: 300_000 }),
  retryOn: DEFAULT_RETRY_ON,
}) satisfies RetryPolicy;

/** Statuses whose Retry-After header sets the next delay (and pauses the key). */
export const RETRY_AFTER_STATUSES: ReadonlySet<number> = new Set([429, 503]);

/** Transport error codes that mean the endpoint did not answer in time. Always retried. */
export const TIMEOUT_CODES: ReadonlySet<string> = new Set([
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'ETIMEDOUT',
]);

/** Transport error codes that mean the connection failed. Always retried. */
export const NETWORK_CODES: ReadonlySet<string> = new Set([
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
]);

/** undici's codes for a request it will not send (a header or path it does not allow). */
const REFUSED_REQUEST_CODES = new Set(['UND_ERR_INVALID_ARG', 'UND_ERR_NOT_SUPPORTED']);

/**
 * Maps an error thrown by the HTTP client to a timeout or network error (both retryable), or to a
 * request the client refused to send (not retryable).
 */
export function classifyTransportError(err: unknown): RelayError {
  if (err instanceof RelayError) return err;
  // undici may wrap what a connector threw (an egress refusal): that decision stands.
  const cause = (err as { cause?: unknown } | null)?.cause;
  if (cause instanceof RelayError) return cause;
  const e = err as { code?: unknown; message?: unknown; name?: unknown; cause?: { code?: unknown } };
  const code = typeof e.code === 'string' ? e.code : typeof e.cause?.code === 'string' ? e.cause.code : 'UNKNOWN';
  const message = typeof e.message === 'string' ? e.message : String(err);
  if (TIMEOUT_CODES.has(code) || e.name === 'TimeoutError') return new TimeoutError(code, message);
  // The client refused to send the request as built: the same request fails the same way every time.
  if (REFUSED_REQUEST_CODES.has(code)) {
    return new InvalidParamsError([{ path: 'request', message: `the HTTP client refused to send it: ${message}` }]);
  }
  return new NetworkError(code, message);
}

/** Parses Retry-After (delay seconds or an HTTP date) into milliseconds from now. */
export function parseRetryAfter(value: string | string[] | undefined, now: number): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined) return undefined;
  const trimmed = v.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const at = Date.parse(trimmed);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - now);
}

/** Whether an HTTP status is worth another attempt under this action's policy. */
export function isRetryableStatus(status: number, retryOn: readonly number[]): boolean {
  return retryOn.includes(status);
}

/**
 * Delay before the next attempt. Exponential uses full jitter (a random share of the capped
 * exponential step); fixed waits `delayMs` exactly. `attemptsMade` counts failed attempts so far (1+).
 */
export function backoffDelay(attemptsMade: number, backoff: BackoffPolicy, random: () => number): number {
  if (backoff.type === 'fixed') return Math.min(backoff.delayMs, backoff.maxDelayMs);
  const step = Math.min(backoff.maxDelayMs, backoff.delayMs * 2 ** Math.max(0, attemptsMade - 1));
  return Math.floor(random() * step);
}

/** The delay of the next attempt: the backoff, raised to a Retry-After when given, capped. */
export function nextAttemptDelay(
  attemptsMade: number,
  backoff: BackoffPolicy,
  retryAfterMs: number | undefined,
  random: () => number,
): number {
  const delay = backoffDelay(attemptsMade, backoff, random);
  if (retryAfterMs === undefined) return delay;
  return Math.min(backoff.maxDelayMs, Math.max(delay, retryAfterMs));
}

/**
 * Whether a token endpoint's non-2xx answer is worth another attempt: the endpoint being down or
 * busy (any 5xx, 408, 429) is; credentials refused (401, 403) or a request it cannot read (400) is
 * final. Wider than DEFAULT_RETRY_ON: a token endpoint has no `retry.retryOn` of its own.
 */
export function isRetryableTokenStatus(status: number): boolean {
  return status >= 500 || status === 408 || status === 429;
}

/** A 401 on a request that carried an access token: one fresh token and one more request, before the attempt counts as failed. */
export function shouldRefreshToken(status: number, sentToken: string | undefined): boolean {
  return status === 401 && sentToken !== undefined;
}

/**
 * What one request says of the third party's health, for its circuit breaker: 5xx, 429 and no
 * answer are failures, other statuses are not; `undefined` when the request says nothing of it
 * (a destination our own egress policy refused, or a fault before the request left).
 */
export function circuitFailure(status: number | undefined, sendError: unknown): boolean | undefined {
  if (status !== undefined) return status >= 500 || status === 429;
  if (sendError instanceof RelayError && !sendError.retryable) return undefined;
  return true;
}
