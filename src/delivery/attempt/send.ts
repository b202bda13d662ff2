import { RelayError, coerceError } from '../../errors/errors.js';
import type { CircuitBreaker } from '../circuit-breaker.js';
import type { SentResponse } from '../http-sender.js';
import { circuitFailure, shouldRefreshToken } from '../retry-policy.js';
import { requestTimeoutMs, type Attempt, type LoadedAttempt, type PipelineContext } from './attempt.js';
import { retakeSlot, takePermit } from './gates.js';
import { prepare } from './prepare.js';

/** Bytes of a response body kept in an attempt record. */
export const RECORD_BODY_BYTES = 4096;

/**
 * Step 4: sends the prepared request under an in-flight permit when the action has one. A 401 on
 * a token-carrying request gets one fresh token and one more request, on a slot of its own. The
 * circuit hears of the third party's health whatever happens. The permit is given back by
 * `releasePermit` once the outcome is written: a Retry-After's pause is then in place before
 * another job can take the permit and send.
 */
export async function send(ctx: PipelineContext, attempt: LoadedAttempt): Promise<SentResponse> {
  // No permit to take (most actions): not awaited, so no turn of the microtask queue.
  const leasing = takePermit(ctx, attempt);
  if (leasing !== false) attempt.permit = await leasing;
  // The slot taken at the gates, unless a token fetch or the permit wait made it stale.
  const slot = retakeSlot(ctx, attempt, true);
  if (slot) await slot;
  let sendError: unknown;
  try {
    attempt.res = await sendOnce(ctx, attempt);
    if (shouldRefreshToken(attempt.res.status, attempt.prepared?.applied.token)) {
      // The token may have been revoked or expired early.
      attempt.log().debug({ status: 401 }, 'access token refused, fetching a new one');
      await prepare(ctx, attempt, attempt.prepared?.applied.token);
      await retakeSlot(ctx, attempt, false);
      attempt.res = await sendOnce(ctx, attempt);
    }
    return attempt.res;
  } catch (err: unknown) {
    sendError = err;
    throw err;
  } finally {
    // A deferral for the second request's slot comes after the 401: the circuit hears of that answer.
    if (attempt.action.definition.circuitBreaker && ctx.circuitBreaker) {
      await recordCircuit(ctx, attempt, ctx.circuitBreaker, circuitFailure(attempt.res?.status, sendError));
    }
  }
}

/**
 * One HTTP request of the attempt, reported as a `sent` event whatever its end. A plain promise
 * chain, not an async function: one promise fewer per delivery.
 */
function sendOnce(ctx: PipelineContext, attempt: LoadedAttempt): Promise<SentResponse> {
  const { action } = attempt;
  const prepared = attempt.prepared;
  if (!prepared) return Promise.reject(new Error('send before prepare'));
  const captures = action.capturesResponse || action.capturesErrorResponse;
  const readLimit = captures ? ctx.maxResponseBytes : RECORD_BODY_BYTES;
  const opts = { timeoutMs: requestTimeoutMs(ctx, action), readLimit, ...(prepared.tls ? { tls: prepared.tls } : {}) };
  const start = ctx.now();
  return ctx.sender.send(prepared.req, opts).then(
    (res) => {
      ctx.events.emit('sent', { actionId: action.id, jobId: attempt.jobId, durationMs: ctx.now() - start, status: res.status });
      return res;
    },
    (err: unknown) => {
      const reason = err instanceof RelayError ? err.reason : undefined;
      const failure = reason === 'timeout' || reason === 'network' ? reason : undefined;
      ctx.events.emit('sent', {
        actionId: action.id,
        jobId: attempt.jobId,
        durationMs: ctx.now() - start,
        ...(failure ? { failure } : {}),
      });
      throw err;
    },
  );
}

/** Tells the key's circuit breaker how the request went (when it says anything of the third party). */
async function recordCircuit(
  ctx: PipelineContext,
  attempt: LoadedAttempt,
  breaker: CircuitBreaker,
  failed: boolean | undefined,
): Promise<void> {
  const cfg = attempt.action.definition.circuitBreaker;
  if (!cfg || failed === undefined) return;
  const key = attempt.action.limitKey;
  try {
    const t = await breaker.record(key, failed, attempt.probe, ctx.now(), cfg);
    if (t === 'opened' || (attempt.probe && failed)) {
      ctx.events.emit('circuit', { key, state: 'open' });
      // Logged by the one request that opened it, not per deferred job.
      if (t === 'opened') attempt.log().warn({ key, openMs: cfg.openMs }, 'circuit opened');
    } else if (t === 'closed') {
      ctx.events.emit('circuit', { key, state: 'closed' });
      attempt.log().info({ key }, 'circuit closed');
    }
  } catch (err: unknown) {
    attempt.log().warn({ err: coerceError(err).message }, 'circuit record failed');
  }
}

/** Gives back the attempt's in-flight permit, when it holds one. */
export async function releasePermit(ctx: PipelineContext, attempt: Attempt): Promise<void> {
  if (!attempt.permit || !attempt.action) return;
  attempt.permit = false;
  await ctx.rateLimiter
    ?.release(attempt.action.limitKey, attempt.jobId)
    .catch((e: unknown) => attempt.log().warn({ err: coerceError(e).message }, 'permit release failed'));
}
