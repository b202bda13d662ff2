import { HttpStatusError, type RelayError } from '../../errors/errors.js';
import { RETRY_DEFAULTS, nextAttemptDelay, type RetryPolicy } from '../retry-policy.js';

/** What a failed attempt leads to. */
export type AttemptDecision =
  /** Another attempt after `delayMs`. */
  | { kind: 'retry'; delayMs: number; maxAttempts: number; pauseUntil: number | undefined }
  /** The job ends in the dead-letter queue. */
  | { kind: 'dead'; maxAttempts: number; pauseUntil: number | undefined };

/** The facts of the failed attempt a decision reads. */
export interface FailedAttempt {
  /** 1 for the first attempt. */
  number: number;
  /** A draw in [0, 1) for the backoff's jitter: passed in so that the decision is a pure function. */
  jitter: number;
}

/**
 * Decides what a failed attempt leads to: a pure function of the error (which carries its own
 * `retryable` and Retry-After), the attempt, the action's retry policy (the defaults when the
 * action is unknown) and the time. `pauseUntil`, when set, is until when the whole rate-limit key
 * should back off: a Retry-After, capped at the backoff's maxDelayMs so that a daily quota (or a
 * hostile header) cannot park a key for a day.
 */
export function decideOutcome(
  error: RelayError,
  attempt: FailedAttempt,
  action: { definition: { retry: RetryPolicy } } | null,
  now: number,
): AttemptDecision {
  const retry = action?.definition.retry ?? RETRY_DEFAULTS;
  const retryAfterMs = error instanceof HttpStatusError ? error.retryAfterMs : undefined;
  const pauseUntil = retryAfterMs !== undefined && action ? now + Math.min(retryAfterMs, retry.backoff.maxDelayMs) : undefined;
  if (!error.retryable || attempt.number >= retry.maxAttempts) return { kind: 'dead', maxAttempts: retry.maxAttempts, pauseUntil };
  const delayMs = nextAttemptDelay(attempt.number, retry.backoff, retryAfterMs, () => attempt.jitter);
  return { kind: 'retry', delayMs, maxAttempts: retry.maxAttempts, pauseUntil };
}
