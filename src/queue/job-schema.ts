import { z } from 'zod';
import { TRACEPARENT_MESSAGE, parseTraceparent } from '../telemetry/trace-context.js';

const jsonObject = z.record(z.string(), z.unknown());

/** Longest orderingKey, in bytes of UTF-8: it is part of a Redis key name. */
export const MAX_ORDERING_KEY_BYTES = 256;

/** A job as the journey engine submits it (library, HTTP and CLI alike). */
export const jobInputSchema = z.strictObject({
  actionId: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'an action id'),
  params: jsonObject.default({}),
  context: jsonObject.default({}),
  /** Sent as the Idempotency-Key header: visible ASCII (spaces inside allowed), at most 256. */
  idempotencyKey: z
    .string()
    .min(1)
    .max(256)
    .regex(/^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$/, 'visible ASCII characters only: it is sent as the Idempotency-Key header')
    .optional(),
  /**
   * Jobs of one action with the same key are delivered one at a time, in enqueue order (a
   * profile id, an order id). At most 256 bytes of UTF-8.
   */
  orderingKey: z
    .string()
    .min(1)
    .refine((k) => Buffer.byteLength(k) <= MAX_ORDERING_KEY_BYTES, `at most ${MAX_ORDERING_KEY_BYTES} bytes (UTF-8)`)
    .optional(),
  /** The caller's W3C trace context: the job's spans (and its request's traceparent) continue that trace. */
  traceparent: z
    .string()
    .refine((v) => parseTraceparent(v) !== null, TRACEPARENT_MESSAGE)
    .optional(),
  /** Wait this long before the first attempt. @defaultValue 0 */
  delayMs: z
    .number()
    .int()
    .min(0)
    .max(30 * 86_400_000)
    .optional(),
});
export type JobInput = z.input<typeof jobInputSchema>;
export type ParsedJobInput = z.infer<typeof jobInputSchema>;

/** What is stored in the BullMQ job (its name is the action id): params and context, never the action. */
export const jobDataSchema = z.object({
  params: jsonObject,
  context: jsonObject,
  idempotencyKey: z.string().optional(),
  /** Set on a replayed job: the dead-letter record it came from. */
  replayOf: z.string().optional(),
  /** The job's place in line among its action's jobs with this key (see queue/ordering.ts). */
  orderingKey: z.string().optional(),
  /** The trace the job's attempts continue (its enqueue span's, or the caller's). */
  traceparent: z.string().optional(),
});
export type JobData = z.infer<typeof jobDataSchema>;

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Reads a job's stored data on the worker's hot path: the same check as `jobDataSchema` (a
 * property test holds them equal), by hand, since a zod parse per job was a measurable share of
 * the worker's CPU. The producer wrote the data through `jobInputSchema`; this guards against
 * jobs written by anything else. Returns the field at fault when the data is malformed.
 */
export function readJobData(raw: unknown): { ok: true; value: JobData } | { ok: false; path: string } {
  if (!isRecord(raw)) return { ok: false, path: 'job.data' };
  const { params, context, idempotencyKey, replayOf, orderingKey, traceparent } = raw;
  if (!isRecord(params)) return { ok: false, path: 'job.data.params' };
  if (!isRecord(context)) return { ok: false, path: 'job.data.context' };
  if (idempotencyKey !== undefined && typeof idempotencyKey !== 'string') return { ok: false, path: 'job.data.idempotencyKey' };
  if (replayOf !== undefined && typeof replayOf !== 'string') return { ok: false, path: 'job.data.replayOf' };
  if (orderingKey !== undefined && typeof orderingKey !== 'string') return { ok: false, path: 'job.data.orderingKey' };
  if (traceparent !== undefined && typeof traceparent !== 'string') return { ok: false, path: 'job.data.traceparent' };
  const value: JobData = { params, context };
  if (idempotencyKey !== undefined) value.idempotencyKey = idempotencyKey;
  if (replayOf !== undefined) value.replayOf = replayOf;
  if (traceparent !== undefined) value.traceparent = traceparent;
  if (orderingKey !== undefined) value.orderingKey = orderingKey;
  return { ok: true, value };
}

/** What a finished job returns (BullMQ returnvalue). */
export interface JobOutcome {
  outcome: 'delivered' | 'dead';
  status: number | null;
  reason: string | null;
  attempts: number;
  response?: Record<string, unknown>;
  /** A dead job's captured errorResponse fields. */
  errorResponse?: Record<string, unknown>;
  error?: string;
}
