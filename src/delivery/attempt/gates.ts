import { DelayedError } from 'bullmq';
import { CappedError } from '../../errors/errors.js';
import { FRESH_PRIORITY } from '../../queue/delivery-queue.js';
import { moveToDelayedWithPriority } from '../../queue/bullmq-internals.js';
import type { CircuitBreaker } from '../circuit-breaker.js';
import type { DeliveryEventMap } from '../delivery-events.js';
import { DELAYED_WAKE_EARLY_MS, IN_PROCESS_WAIT_MS, LATE_TOLERANCE_MS, type RateLimitSpec, type RateLimiter } from '../rate-limiter.js';
import { requestTimeoutMs, type LoadedAttempt, type PauseEntry, type PipelineContext } from './attempt.js';

/** How long a worker trusts what it last read of a key's back-pressure pause (no rateLimit). */
const PAUSE_RECHECK_MS = 250;
/** How often a job waiting for an in-flight permit asks again. */
const PERMIT_POLL_MS = 20;
/** Bound on the pause cache: keys come from definitions, but never trust a count. */
const MAX_CACHED_PAUSES = 10_000;

type DeferCause = DeliveryEventMap['deferred']['cause'];

/**
 * Step 2: returns when the job may be sent now: its circuit lets it through, and a rate slot (or,
 * without a rateLimit, no back-pressure pause) is its. Otherwise the job goes back to the delayed
 * set, using no attempt, and DelayedError is thrown.
 */
export function passGates(ctx: PipelineContext, attempt: LoadedAttempt): Promise<void> | undefined {
  if (attempt.action.definition.circuitBreaker && ctx.circuitBreaker) return passCircuitThenLimits(ctx, attempt, ctx.circuitBreaker);
  return passLimits(ctx, attempt);
}

async function passCircuitThenLimits(ctx: PipelineContext, attempt: LoadedAttempt, breaker: CircuitBreaker): Promise<void> {
  attempt.probe = await checkCircuit(ctx, attempt, breaker);
  await passLimits(ctx, attempt);
}

/** The rate slot or pause check; undefined when the job may go at once (no promise, no Redis call). */
function passLimits(ctx: PipelineContext, attempt: LoadedAttempt): Promise<void> | undefined {
  if (!ctx.rateLimiter) return undefined;
  const limit = attempt.action.definition.rateLimit;
  if (limit) return takeSlot(ctx, attempt, ctx.rateLimiter, limit);
  return awaitPause(ctx, attempt, ctx.rateLimiter);
}

/** A rate-limit slot for the next request; notes when it was taken (see `retakeSlot`). */
function takeSlot(
  ctx: PipelineContext,
  attempt: LoadedAttempt,
  limiter: RateLimiter,
  limit: Omit<RateLimitSpec, 'key'>,
): Promise<void> | undefined {
  const now = ctx.now();
  // Most jobs under a generous limit take a slot of the process's block: no promise, no Redis call.
  if (limiter.takeDue(attempt.action.limitKey, limit, now)) {
    attempt.slotAt = now;
    return undefined;
  }
  return awaitSlot(ctx, attempt, limiter).then(() => {
    attempt.slotAt = ctx.now();
  });
}

/**
 * A new slot for a request about to leave, when the action has a rateLimit: always (`staleOnly`
 * false: a second request, after a 401), or when the slot taken at the gates is more than
 * LATE_TOLERANCE_MS old (a token fetch or a permit wait came between). Without it, every job whose
 * slot fell within a slow token fetch went the moment the token came, all together. May defer the
 * job (DelayedError), using no attempt.
 */
export function retakeSlot(ctx: PipelineContext, attempt: LoadedAttempt, staleOnly: boolean): Promise<void> | undefined {
  const limit = attempt.action.definition.rateLimit;
  if (!ctx.rateLimiter || !limit) return undefined;
  if (staleOnly && ctx.now() - attempt.slotAt <= LATE_TOLERANCE_MS) return undefined;
  return takeSlot(ctx, attempt, ctx.rateLimiter, limit);
}

/**
 * Sends a job to the delayed set until `until`, using no attempt, and throws DelayedError. Lane
 * `due` is for a job that holds a reserved rate-limit slot: BullMQ serves its plain wait list
 * (priority 0) before prioritized jobs, and fresh jobs are enqueued with FRESH_PRIORITY, so the job
 * comes back ahead of a backlog (100,000 jobs for one key would otherwise hold it past its slot).
 * Every other deferral (a permit, an open circuit, a pause) keeps the job's own priority: put in
 * the due lane, jobs that keep coming back would starve the fresh jobs of every other key.
 */
async function defer(
  ctx: PipelineContext,
  attempt: LoadedAttempt,
  until: number,
  cause: DeferCause,
  lane: 'due' | 'own',
  waitMs?: number,
): Promise<never> {
  const { job } = attempt;
  ctx.events.emit('deferred', {
    actionId: attempt.action.id,
    jobId: attempt.jobId,
    cause,
    until,
    ...(waitMs !== undefined ? { waitMs } : {}),
  });
  const priority = lane === 'due' ? 0 : (job.opts.priority ?? FRESH_PRIORITY);
  await moveToDelayedWithPriority(ctx.connection, job, until, priority, attempt.token);
  throw new DelayedError();
}

/** Defers the job while its key's circuit is open; returns true when this attempt is the half-open probe. */
async function checkCircuit(ctx: PipelineContext, attempt: LoadedAttempt, breaker: CircuitBreaker): Promise<boolean> {
  const key = attempt.action.limitKey;
  const d = await breaker.check(key, ctx.now(), requestTimeoutMs(ctx, attempt.action) + 5000);
  // Another worker may have closed or opened it: this process's view must follow.
  const state = d.kind === 'closed' ? 'closed' : d.kind === 'probe' ? 'half-open' : d.state;
  ctx.events.emit('circuit', { key, state });
  if (d.kind === 'closed') return false;
  if (d.kind === 'probe') return true;
  return defer(ctx, attempt, d.until, 'circuit', 'own');
}

/**
 * Returns when this job may send under its key's rate limit. A near slot is waited for here;
 * a far one (or a pause asked by the third party) defers the job, using no attempt.
 */
async function awaitSlot(ctx: PipelineContext, attempt: LoadedAttempt, limiter: RateLimiter): Promise<void> {
  const { action } = attempt;
  const limit = action.definition.rateLimit;
  if (!limit) return;
  const spec = { key: action.limitKey, max: limit.max, perMs: limit.perMs, maxWaitMs: limit.maxWaitMs };
  let deferTo = 0;
  let reserved = false;
  // A wait that wakes late (a busy event loop) takes a new slot rather than bunching with later ones.
  for (let tries = 0; tries < 3 && deferTo === 0; tries++) {
    const decision = await limiter.acquire(spec, attempt.jobId, ctx.now());
    if (decision.kind === 'go') return;
    if (decision.kind === 'capped') throw new CappedError(decision.waitMs, limit.maxWaitMs);
    if (decision.waitMs > IN_PROCESS_WAIT_MS) {
      deferTo = decision.at - DELAYED_WAKE_EARLY_MS;
      reserved = true;
      break;
    }
    await new Promise((r) => setTimeout(r, decision.waitMs));
    // Lateness is the timer's: measured before the pause lookup's round trip.
    const late = ctx.now() - decision.at;
    const pausedUntil = await limiter.pausedUntil(action.limitKey);
    if (pausedUntil > ctx.now()) deferTo = pausedUntil;
    else if (late <= LATE_TOLERANCE_MS) return;
  }
  if (deferTo === 0) deferTo = ctx.now();
  await defer(ctx, attempt, deferTo, 'rate_limit', reserved ? 'due' : 'own', deferTo - attempt.startedAt);
}

/**
 * For an action without a rateLimit: defers the job, using no attempt, while the third party's
 * Retry-After pauses its key. The pause is read from Redis at most every PAUSE_RECHECK_MS per
 * key and process, so an unlimited action costs no Redis call per job.
 */
function awaitPause(ctx: PipelineContext, attempt: LoadedAttempt, limiter: RateLimiter): Promise<void> | undefined {
  const key = attempt.action.limitKey;
  const t = ctx.now();
  const known = ctx.pauses.get(key);
  if (known && t - known.checkedAt <= PAUSE_RECHECK_MS) {
    return known.until <= t ? undefined : defer(ctx, attempt, known.until, 'pause', 'own', known.until - attempt.startedAt);
  }
  return readPause(ctx, attempt, known?.reading ?? startPauseRead(ctx, limiter, key, known, t));
}

/**
 * Reads a key's pause from Redis and keeps the answer. The read is marked in the cache while it is
 * under way, so that the jobs starting meanwhile wait for it rather than each sending their own
 * (a saturated worker otherwise sent one per job for the length of a round trip).
 */
function startPauseRead(
  ctx: PipelineContext,
  limiter: RateLimiter,
  key: string,
  known: PauseEntry | undefined,
  t: number,
): Promise<number> {
  const stale = { until: known?.until ?? 0, checkedAt: known?.checkedAt ?? -Infinity };
  const reading = limiter.pausedUntil(key).then(
    (read) => {
      // A Retry-After this process learned while the read was under way (written to Redis after
      // it was read) stands: the later of the two.
      const until = Math.max(read, ctx.pauses.get(key)?.until ?? 0);
      rememberPause(ctx, key, until, t);
      return until;
    },
    (err: unknown) => {
      ctx.pauses.set(key, stale);
      throw err;
    },
  );
  ctx.pauses.set(key, { ...stale, reading });
  return reading;
}

/** Defers the job while the pause just read lasts. */
async function readPause(ctx: PipelineContext, attempt: LoadedAttempt, reading: Promise<number>): Promise<void> {
  const until = await reading;
  if (until > ctx.now()) await defer(ctx, attempt, until, 'pause', 'own', until - attempt.startedAt);
}

/** Keeps what this process knows of a key's pause (read, or just asked by a Retry-After). */
export function rememberPause(ctx: PipelineContext, key: string, until: number, checkedAt: number): void {
  if (ctx.pauses.size > MAX_CACHED_PAUSES) ctx.pauses.clear();
  ctx.pauses.set(key, { until, checkedAt });
}

/**
 * Takes one of the key's in-flight permits when the action sets maxConcurrent: polled for up to
 * a second (permits free up as requests end), then the job is deferred briefly, using no attempt.
 * Returns whether a permit is held (the send step releases it).
 */
export function takePermit(ctx: PipelineContext, attempt: LoadedAttempt): Promise<boolean> | false {
  const max = attempt.action.definition.rateLimit?.maxConcurrent;
  const limiter = ctx.rateLimiter;
  if (!max || !limiter) return false;
  return leasePermit(ctx, attempt, limiter, max);
}

async function leasePermit(ctx: PipelineContext, attempt: LoadedAttempt, limiter: RateLimiter, max: number): Promise<boolean> {
  // The lease outlives the request (connect + headers + body), so only a crash lets it lapse.
  const leaseMs = requestTimeoutMs(ctx, attempt.action) * 3 + 5000;
  for (let waited = 0; waited < IN_PROCESS_WAIT_MS; waited += PERMIT_POLL_MS) {
    if (await limiter.lease(attempt.action.limitKey, max, attempt.jobId, ctx.now(), leaseMs)) return true;
    await new Promise((r) => setTimeout(r, PERMIT_POLL_MS));
  }
  const deferTo = ctx.now() + 250;
  return defer(ctx, attempt, deferTo, 'permit', 'own', deferTo - attempt.startedAt);
}
