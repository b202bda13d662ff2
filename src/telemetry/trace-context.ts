/*
 * W3C Trace Context (https://www.w3.org/TR/trace-context/) `traceparent` values, read and written
 * without OpenTelemetry: a job keeps its caller's trace even when this process does not trace.
 */

/** version 00: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, lowercase. */
export const TRACEPARENT_PATTERN = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

export interface TraceParent {
  traceId: string;
  /** The span the value was sent from. */
  spanId: string;
  /** Bit 0: sampled. */
  flags: number;
}

const ALL_ZERO_TRACE = '0'.repeat(32);
const ALL_ZERO_SPAN = '0'.repeat(16);

/** The parts of a valid traceparent, or null (wrong form, or an all-zero id, which the spec forbids). */
export function parseTraceparent(value: string | undefined): TraceParent | null {
  if (value === undefined) return null;
  const m = TRACEPARENT_PATTERN.exec(value);
  if (!m) return null;
  const [, traceId = '', spanId = '', flags = '00'] = m;
  if (traceId === ALL_ZERO_TRACE || spanId === ALL_ZERO_SPAN) return null;
  return { traceId, spanId, flags: Number.parseInt(flags, 16) };
}

export function formatTraceparent(p: TraceParent): string {
  return `00-${p.traceId}-${p.spanId}-${(p.flags & 0xff).toString(16).padStart(2, '0')}`;
}

/** Why a value is not a traceparent, for the error naming the field. */
export const TRACEPARENT_MESSAGE = 'a W3C traceparent: 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>, lowercase, ids not all zero';

/**
 * A job input with the caller's `traceparent` header added, unless the job names its own. A
 * malformed header is ignored, as the W3C spec asks of a receiver (a field in the body is checked
 * and refused instead).
 */
export function withTraceparentHeader(job: unknown, header: string | string[] | undefined): unknown {
  if (typeof header !== 'string' || parseTraceparent(header) === null) return job;
  if (job === null || typeof job !== 'object' || Array.isArray(job) || 'traceparent' in job) return job;
  return { ...job, traceparent: header };
}

/**
 * A request's headers with `traceparent` set (any header of that name in another case removed
 * first), or as they are when there is none to send. The input is not changed: a 401 refresh
 * sends the prepared request again, under a span of its own.
 */
export function withTraceparent(headers: Record<string, string>, traceparent: string | undefined): Record<string, string> {
  if (traceparent === undefined) return headers;
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) if (name.toLowerCase() !== 'traceparent') out[name] = value;
  out.traceparent = traceparent;
  return out;
}
