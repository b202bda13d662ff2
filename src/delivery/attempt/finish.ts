import { HttpStatusError, NetworkError, RelayError, ResponseInvalidError, coerceError } from '../../errors/errors.js';
import { batchWrites } from '../../redis/batch-writes.js';
import { orderingKeyOf, type JobOutcome } from '../../queue/job-schema.js';
import type { AttemptRecord, DeadLetterRecord } from '../../queue/outcome-writer.js';
import { maskHeaders, maskPath } from '../auth.js';
import type { SentResponse } from '../http-sender.js';
import type { Attempt, LoadedAttempt, PipelineContext } from './attempt.js';
import { decideOutcome } from './decide-outcome.js';
import { rememberPause } from './gates.js';
import { RECORD_BODY_BYTES } from './send.js';
import { captureErrorResponse, redactCaptured } from './classify.js';

/** Thrown to BullMQ when an attempt failed and another is due after `delayMs`. */
export class RetryScheduled extends Error {
  constructor(
    readonly error: RelayError,
    readonly delayMs: number,
  ) {
    super(error.message);
  }
}

/** Step 6, delivered: writes the outcome exactly once and reports it. */
export async function finishDelivered(
  ctx: PipelineContext,
  attempt: LoadedAttempt,
  status: number,
  captured: Record<string, unknown>,
): Promise<JobOutcome> {
  const { job, jobId } = attempt;
  const end = ctx.now();
  // job.timestamp is the enqueuing host's clock: one running ahead of this one must not give a
  // negative duration (the results reader refuses it, and the journey would never see the outcome).
  const durationMs = Math.max(0, end - job.timestamp);
  const response = redactCaptured(captured, ctx.secrets.redactWhole);
  // Awaited before BullMQ completes the job: should Redis refuse the write (out of memory, a
  // failover), the processor throws, the job is not completed and runs again, so every job ends
  // on the results stream. (Sent without waiting, a refused write left a completed job with no
  // results entry: the full-Redis test caught it.) This write joins the other jobs' that end in
  // this event-loop turn, as one command; BullMQ's completions, sent when the processors return,
  // leave together too (batchWrites).
  const first = await ctx.outcomes.finish(
    attempt.partition,
    {
      jobId,
      actionId: job.name,
      outcome: 'delivered',
      status,
      reason: '',
      attempts: attempt.number,
      durationMs,
      context: attempt.data.context,
      response,
      // Passed, so that the script need not decode the job's data to find them.
      idempotencyKey: attempt.data.idempotencyKey ?? jobId,
      // Undefined when the job has none, as the writer reads them (no spread: one object per job, not three).
      replayOf: attempt.data.replayOf,
      orderingKey: attempt.data.orderingKey,
    },
    ctx.connection,
  );
  batchWrites(ctx.connection);
  if (!first) return endedMeanwhile(ctx, attempt);
  // From when the job became ready: a delay the caller asked for is not latency.
  const latencyMs = Math.max(0, end - job.timestamp - (job.opts.delay ?? 0));
  ctx.events.emit('delivered', { actionId: attempt.action.id, jobId, status, attempt: attempt.number, latencyMs });
  ctx
    .actionLogger(job.name)
    .info({ jobId, attempt: attempt.number, status, durationMs: end - attempt.startedAt, outcome: 'delivered' }, 'delivered');
  return { outcome: 'delivered', status, reason: null, attempts: attempt.number, response };
}

/**
 * Step 6, failed: the one place where an error becomes a queue outcome. Asks the third party's
 * Retry-After pause of the whole key, then schedules another attempt (throws RetryScheduled) or
 * dead-letters the job (returns its outcome).
 */
export async function finishFailed(ctx: PipelineContext, attempt: Attempt, caught: unknown): Promise<JobOutcome> {
  const err = toRelayError(ctx, attempt, caught);
  const decision = decideOutcome(err, { number: attempt.number, jitter: ctx.random() }, attempt.action, ctx.now());
  const record = attemptRecord(ctx, attempt, err);
  if (decision.pauseUntil !== undefined && attempt.action) await pauseKey(ctx, attempt, attempt.action.limitKey, decision.pauseUntil);
  const status = err instanceof HttpStatusError || err instanceof ResponseInvalidError ? err.status : null;
  const logged = { status, durationMs: ctx.now() - attempt.startedAt, reason: err.reason, err: record.error?.message };
  const actionId = attempt.action?.id ?? 'unknown';
  if (decision.kind === 'retry') {
    await ctx.outcomes.recordAttempt(attempt.partition, attempt.jobId, record);
    ctx.events.emit('retried', { actionId, jobId: attempt.jobId, reason: err.reason, attempt: attempt.number, delayMs: decision.delayMs });
    attempt.log().info({ ...logged, retryInMs: decision.delayMs }, `attempt ${attempt.number} of ${decision.maxAttempts} failed, retrying`);
    throw new RetryScheduled(err, decision.delayMs);
  }
  const errorResponse = await finishDead(ctx, attempt, err, status, record);
  if (errorResponse === null) return endedMeanwhile(ctx, attempt);
  ctx.events.emit('dead', { actionId, jobId: attempt.jobId, reason: err.reason, status, attempt: attempt.number });
  attempt.log().info({ ...logged, outcome: 'dead' }, `attempt ${attempt.number} of ${decision.maxAttempts} failed, dead-lettered`);
  return {
    outcome: 'dead',
    status,
    reason: err.reason,
    attempts: attempt.number,
    errorResponse,
    error: record.error?.message ?? `HTTP ${status}`,
  };
}

/** Every worker sees the pause: through the limiter's script for actions with a rateLimit, through the pause cache for the others. */
async function pauseKey(ctx: PipelineContext, attempt: Attempt, key: string, until: number): Promise<void> {
  if (!ctx.rateLimiter) return;
  rememberPause(ctx, key, until, ctx.now());
  await ctx.rateLimiter
    .pushBack(key, until, ctx.now())
    .catch((e: unknown) => attempt.log().warn({ err: coerceError(e).message }, 'rate-limit push-back failed'));
}

/**
 * A job found ended when it was taken again (another run wrote its end and lost its lock before
 * BullMQ completed it): its recorded end, so that BullMQ's completion and the job's status say
 * what the results stream says. Nothing is counted or logged as a new outcome.
 */
export function alreadyEnded(attempt: Attempt, ended: JobOutcome): JobOutcome {
  attempt.log().info({ outcome: ended.outcome }, 'job had already ended: completed as it ended, nothing sent');
  // A delivered job's marker does not say on which attempt: the run that delivered it had this number.
  return ended.attempts > 0 ? ended : { ...ended, attempts: attempt.number };
}

/** This run's end came second (the other run wrote it first): the recorded end stands. */
async function endedMeanwhile(ctx: PipelineContext, attempt: Attempt): Promise<JobOutcome> {
  const ended = await ctx.outcomes.endedAs(attempt.partition, attempt.jobId);
  // Ended, yet read as not ended: its hash is gone (retention); nothing more is known of it.
  return alreadyEnded(attempt, ended ?? { outcome: 'delivered', status: null, reason: null, attempts: attempt.number, response: {} });
}

/**
 * Writes the dead-letter record (every attempt's record, the job as enqueued) with the terminal
 * outcome; returns the errorResponse fields captured from the last answer, null when the job had
 * already ended (its record and entry stand as written then).
 */
async function finishDead(
  ctx: PipelineContext,
  attempt: Attempt,
  err: RelayError,
  status: number | null,
  record: AttemptRecord,
): Promise<Record<string, unknown> | null> {
  const { job, jobId, data } = attempt;
  const errorResponse = redactCaptured(captureErrorResponse(attempt.action, attempt.res), ctx.secrets.redactWhole);
  // From the raw data when it did not parse (the job dies for it): its line must move on all the same.
  const orderingKey = data?.orderingKey ?? orderingKeyOf(job.data);
  const ordering = orderingKey !== undefined ? { orderingKey } : {};
  const history = [...(await ctx.outcomes.attemptsOf(attempt.partition, jobId, attempt.number - 1)), record];
  const context = data?.context ?? {};
  const dead: DeadLetterRecord = {
    jobId,
    actionId: job.name,
    job: {
      actionId: job.name,
      params: data?.params ?? {},
      context,
      ...(data?.idempotencyKey !== undefined ? { idempotencyKey: data.idempotencyKey } : {}),
      ...(data?.replayOf !== undefined ? { replayOf: data.replayOf } : {}),
      ...ordering,
      enqueuedAt: new Date(job.timestamp).toISOString(),
    },
    reason: err.reason,
    status,
    failedAt: new Date(ctx.now()).toISOString(),
    errorResponse,
    attempts: history,
  };
  const first = await ctx.outcomes.finish(attempt.partition, {
    jobId,
    actionId: job.name,
    outcome: 'dead',
    status,
    reason: err.reason,
    attempts: attempt.number,
    durationMs: Math.max(0, ctx.now() - job.timestamp),
    context,
    response: {},
    errorResponse,
    dead,
    ...ordering,
    ...(data ? { idempotencyKey: data.idempotencyKey ?? jobId } : {}),
    ...(data?.replayOf !== undefined ? { replayOf: data.replayOf } : {}),
  });
  return first ? errorResponse : null;
}

function toRelayError(ctx: PipelineContext, attempt: Attempt, caught: unknown): RelayError {
  if (caught instanceof RelayError) return caught;
  const e = coerceError(caught);
  // A fault of our own must not drop the job: retry it, and say so loudly.
  attempt.log().error({ err: ctx.redact(e.message) }, 'unexpected error while delivering');
  return new NetworkError('EINTERNAL', e.message);
}

/** The failed attempt as its record keeps it: credentials masked, secrets redacted, the body cut short. */
function attemptRecord(ctx: PipelineContext, attempt: Attempt, err: RelayError): AttemptRecord {
  const { action, res } = attempt;
  const req = attempt.prepared?.req;
  const applied = attempt.prepared?.applied ?? { secretHeaders: [], secretQuery: [] };
  const method = req?.method ?? action?.definition.endpoint.method ?? '';
  const url = req ? req.origin + maskPath(req.path, applied) : (action?.definition.endpoint.url ?? '');
  const record: AttemptRecord = {
    attempt: attempt.number,
    startedAt: new Date(attempt.startedAt).toISOString(),
    durationMs: ctx.now() - attempt.startedAt,
    request: { method, url: ctx.redact(url), headers: req ? maskHeaders(req.headers, applied) : {} },
  };
  if (res) record.response = responseRecord(res, ctx.redact);
  if (!(err instanceof HttpStatusError)) record.error = { code: err.code, message: ctx.redact(err.message) };
  return record;
}

/** Response headers and the start of the body as a record keeps them: any secret value echoed back is masked. */
function responseRecord(res: SentResponse, redact: (s: string) => string): NonNullable<AttemptRecord['response']> {
  const headers: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(res.headers)) headers[k] = Array.isArray(v) ? v.map(redact) : redact(v);
  return { status: res.status, headers, body: redact(res.body.subarray(0, RECORD_BODY_BYTES).toString('utf8')) };
}
