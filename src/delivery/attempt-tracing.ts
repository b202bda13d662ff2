import { AsyncLocalStorage } from 'node:async_hooks';
import { DelayedError, type Job } from 'bullmq';
import type { Logger } from 'pino';
import type { ActionStore } from '../actions/action-store.js';
import type { BuiltRequest } from '../actions/compile-action.js';
import { coerceError } from '../errors/errors.js';
import { withTraceparent } from '../telemetry/trace-context.js';
import type { AttemptEnd, AttemptSpan, Tracing } from '../telemetry/tracing.js';
import type { JobOutcome } from '../queue/job-schema.js';
import type { HttpSender, SendOptions, SentResponse } from './http-sender.js';
import type { SecretResolver } from './secret-resolver.js';

/** What an attempt in progress shares with its requests and log lines (AsyncLocalStorage). */
interface AttemptSlot {
  span: AttemptSpan;
  actionId: string;
  /** Requests sent so far in this attempt (a refused token sends a second one). */
  sent: number;
}

export interface AttemptTracingDeps {
  tracing?: Tracing | undefined;
  sender: HttpSender;
  logger: Logger;
  store: ActionStore;
  secrets: SecretResolver;
}

export interface AttemptTracing {
  /** The sender to deliver with: each request of an attempt gets an HTTP span and its `traceparent` header. */
  sender: HttpSender;
  /** The logger to log attempts with: each line written during an attempt carries `trace_id` and `span_id`. */
  logger: Logger;
  /** Runs each attempt under its `deliver <actionId>` span. */
  wrap<A extends unknown[]>(processor: (job: Job, ...rest: A) => Promise<JobOutcome>): (job: Job, ...rest: A) => Promise<JobOutcome>;
}

/**
 * How an attempt ended, from what the processor returned or threw: a DelayedError is a deferral
 * (no attempt used), another error a retry carrying its RelayError (directly or as `error`).
 */
export function attemptEnd(result: { value: JobOutcome } | { thrown: unknown }): AttemptEnd {
  if ('value' in result) return { outcome: result.value.outcome, status: result.value.status, reason: result.value.reason };
  if (result.thrown instanceof DelayedError) return { outcome: 'deferred' };
  const thrown = result.thrown as { error?: unknown; reason?: unknown; status?: unknown } | null;
  const cause = (thrown?.error ?? thrown) as { reason?: unknown; status?: unknown } | null;
  return {
    outcome: 'retry',
    reason: typeof cause?.reason === 'string' ? cause.reason : null,
    status: typeof cause?.status === 'number' ? cause.status : null,
  };
}

/** The URL of a request as a span may show it: secrets masked, every query value replaced. */
export function spanUrl(req: Pick<BuiltRequest, 'origin' | 'path'>, redact: (s: string) => string): string {
  const q = req.path.indexOf('?');
  const path = q < 0 ? req.path : req.path.slice(0, q);
  const query = q < 0 ? '' : `?${req.path.slice(q + 1).replace(/=[^&]*/g, '=REDACTED')}`;
  return redact(`${req.origin}${path}${query}`);
}

/**
 * Tracing of delivery attempts, around the worker rather than inside it: the processor, the
 * sender and the logger are wrapped, so the attempt's steps stay free of tracing. Without an
 * OTLP endpoint and without a stored traceparent a job runs exactly as before (no context).
 */
export function traceAttempts(deps: AttemptTracingDeps): AttemptTracing {
  const tracing = deps.tracing;
  if (!tracing) return { sender: deps.sender, logger: deps.logger, wrap: (p) => p };
  const slots = new AsyncLocalStorage<AttemptSlot>();

  /** One request of a traced attempt: its HTTP span, and its traceparent header unless the action opts out. */
  const sendTraced = async (slot: AttemptSlot, req: BuiltRequest, opts: SendOptions): Promise<SentResponse> => {
    const resend = slot.sent++;
    const http = slot.span.startHttp({ method: req.method, url: spanUrl(req, (s) => deps.secrets.redact(s)), resend });
    const action = await deps.store.getCompiled(slot.actionId).catch(() => null);
    const propagate = action?.definition.propagateTrace !== false;
    const sent = propagate ? { ...req, headers: withTraceparent(req.headers, http.traceparent) } : req;
    try {
      const res = await deps.sender.send(sent, opts);
      http.end({ status: res.status });
      return res;
    } catch (err: unknown) {
      const e = coerceError(err) as Error & { reason?: unknown; code?: unknown };
      http.end({ errorType: typeof e.reason === 'string' ? e.reason : typeof e.code === 'string' ? e.code : e.name });
      throw err;
    }
  };

  const sender: HttpSender = {
    close: () => deps.sender.close(),
    // Not an async function: an untraced request costs no promise of its own.
    send(req, opts) {
      const slot = slots.getStore();
      return slot ? sendTraced(slot, req, opts) : deps.sender.send(req, opts);
    },
  };

  const logger = deps.logger.child(
    {},
    {
      formatters: {
        log: (line: object) => {
          const slot = slots.getStore();
          return slot ? { ...line, ...slot.span.logFields } : line;
        },
      },
    },
  );

  /** Runs one attempt under its `deliver <actionId>` span. */
  const runTraced = async (job: Job, stored: string | undefined, run: () => Promise<JobOutcome>): Promise<JobOutcome> => {
    const jobId = job.id as string;
    const span = tracing.attemptSpan({ actionId: job.name, jobId, attempt: job.attemptsMade + 1, traceparent: stored });
    try {
      const value = await slots.run({ span, actionId: job.name, sent: 0 }, run);
      span.end(attemptEnd({ value }));
      return value;
    } catch (thrown: unknown) {
      span.end(attemptEnd({ thrown }));
      throw thrown;
    }
  };

  return {
    sender,
    logger,
    wrap:
      (processor) =>
      (job, ...rest) => {
        const traceparent = (job.data as { traceparent?: unknown } | undefined)?.traceparent;
        const stored = typeof traceparent === 'string' ? traceparent : undefined;
        // Untraced: the processor's own promise, nothing around it.
        if (!tracing.enabled && stored === undefined) return processor(job, ...rest);
        return runTraced(job, stored, () => processor(job, ...rest));
      },
  };
}
