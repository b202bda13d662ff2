/*
 * What the rest of the code knows of tracing: this interface and its no-op. The OpenTelemetry SDK
 * lives in otel-tracing.ts and is imported only when tracing is on (start-tracing.ts), so a process
 * without an OTLP endpoint never loads it. The no-op still carries a job's stored traceparent through: the third
 * party then sees the caller's trace even when the relay itself does not trace.
 */
import type { Telemetry } from 'bullmq';
import { parseTraceparent } from './trace-context.js';
import type { TracingSettings } from './tracing-config.js';

/** The span of one enqueued job. */
export interface EnqueueSpan {
  /** What is stored with the job: this span's traceparent, or the caller's when not tracing. */
  readonly traceparent: string | undefined;
  /** Runs `fn` with this span current (BullMQ's own `add` span then nests under it). */
  run<T>(fn: () => Promise<T>): Promise<T>;
  end(error?: unknown): void;
}

/** How an attempt ended, as its span records it. */
export interface AttemptEnd {
  /** delivered | dead: the job ended; retry: another attempt follows; deferred: waits for a slot, no attempt used. */
  outcome: 'delivered' | 'dead' | 'retry' | 'deferred';
  reason?: string | null;
  status?: number | null;
}

/** The HTTP client span of one request (OTel HTTP semantic conventions). */
export interface HttpSpan {
  /** The `traceparent` header value for the request: this span's, or the job's stored one when not tracing. */
  readonly traceparent: string | undefined;
  end(result: { status?: number; errorType?: string }): void;
}

/** The span of one delivery attempt, `deliver <actionId>`. */
export interface AttemptSpan {
  /** `trace_id` and `span_id` for the attempt's log lines (trace_id alone when not tracing). */
  readonly logFields: Readonly<Record<string, string>>;
  /** `url` must have its secrets masked already. `resend` counts requests before this one in the attempt. */
  startHttp(req: { method: string; url: string; resend?: number }): HttpSpan;
  end(end: AttemptEnd): void;
}

export interface Tracing {
  readonly enabled: boolean;
  enqueueSpan(job: { actionId: string; jobId: string; traceparent?: string | undefined }): EnqueueSpan;
  attemptSpan(job: { actionId: string; jobId: string; attempt: number; traceparent?: string | undefined }): AttemptSpan;
  /** BullMQ's `telemetry` queue option (bullmq-otel) when tracing, else undefined. */
  readonly queueTelemetry: Telemetry | undefined;
  /** Exports what is buffered and stops. */
  shutdown(): Promise<void>;
}

const run = <T>(fn: () => Promise<T>) => fn();
const nothing = () => undefined;
const NO_FIELDS: Readonly<Record<string, string>> = Object.freeze({});
const UNTRACED_ENQUEUE: EnqueueSpan = Object.freeze({ traceparent: undefined, run, end: nothing });
const UNTRACED_HTTP: HttpSpan = Object.freeze({ traceparent: undefined, end: nothing });
const UNTRACED_ATTEMPT: AttemptSpan = Object.freeze({ logFields: NO_FIELDS, startHttp: () => UNTRACED_HTTP, end: nothing });

/** Tracing off: no spans; a stored traceparent is passed on as it is. */
export const noTracing: Tracing = Object.freeze({
  enabled: false,
  queueTelemetry: undefined,
  enqueueSpan(job: { traceparent?: string | undefined }): EnqueueSpan {
    return job.traceparent === undefined ? UNTRACED_ENQUEUE : { traceparent: job.traceparent, run, end: nothing };
  },
  attemptSpan(job: { traceparent?: string | undefined }): AttemptSpan {
    const parent = parseTraceparent(job.traceparent);
    if (!parent) return UNTRACED_ATTEMPT;
    const http: HttpSpan = { traceparent: job.traceparent, end: nothing };
    return { logFields: { trace_id: parent.traceId }, startHttp: () => http, end: nothing };
  },
  shutdown: async () => undefined,
});

export interface StartTracingOptions {
  /** `service.name` when OTEL_SERVICE_NAME is not set, e.g. `action-relay-worker`. */
  serviceName: string;
  serviceVersion: string;
  env?: NodeJS.ProcessEnv;
  /** Already read settings (else read from `env`). */
  settings?: TracingSettings;
}
