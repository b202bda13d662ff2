import { isProxy } from 'node:util/types';
import { z } from 'zod';
import { TRACEPARENT_MESSAGE, parseTraceparent } from '../telemetry/trace-context.js';

const jsonObject = z.record(z.string(), z.unknown());

/** Longest orderingKey, in bytes of UTF-8: it is part of a Redis key name. */
export const MAX_ORDERING_KEY_BYTES = 256;

const ACTION_ID = /^[A-Za-z0-9_-]{1,64}$/;
const IDEMPOTENCY_KEY = /^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$/;
/** Longest idempotencyKey, in characters (visible ASCII only). */
const MAX_IDEMPOTENCY_KEY = 256;
/** Longest delayMs: 30 days. */
const MAX_DELAY_MS = 30 * 86_400_000;

/** A job as the journey engine submits it (library, HTTP and CLI alike). */
export const jobInputSchema = z.strictObject({
  actionId: z.string().regex(ACTION_ID, 'an action id'),
  params: jsonObject.default({}),
  context: jsonObject.default({}),
  /** Sent as the Idempotency-Key header: visible ASCII (spaces inside allowed), at most 256. */
  idempotencyKey: z
    .string()
    .min(1)
    .max(MAX_IDEMPOTENCY_KEY)
    .regex(IDEMPOTENCY_KEY, 'visible ASCII characters only: it is sent as the Idempotency-Key header')
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
  delayMs: z.number().int().min(0).max(MAX_DELAY_MS).optional(),
});
export type JobInput = z.input<typeof jobInputSchema>;
export type ParsedJobInput = z.infer<typeof jobInputSchema>;

const INPUT_KEYS = new Set(Object.keys(jobInputSchema.shape));

type OptionalField = 'idempotencyKey' | 'orderingKey' | 'traceparent' | 'delayMs';

/** The optional fields' checks, as jobInputSchema makes them. */
const OPTIONAL_FIELDS: [OptionalField, (v: unknown) => boolean][] = [
  ['idempotencyKey', (v) => typeof v === 'string' && v.length <= MAX_IDEMPOTENCY_KEY && IDEMPOTENCY_KEY.test(v)],
  ['orderingKey', (v) => typeof v === 'string' && v !== '' && Buffer.byteLength(v) <= MAX_ORDERING_KEY_BYTES],
  ['traceparent', (v) => typeof v === 'string' && parseTraceparent(v) !== null],
  ['delayMs', (v) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= MAX_DELAY_MS],
];

/**
 * The producer's check of a submitted job, by hand, for the jobs that pass it as they come (plain
 * objects, as parsed from JSON or written in code): the same value as `jobInputSchema.parse` (a
 * property test holds them equal). Anything else gives undefined, and the caller asks
 * `jobInputSchema`, which refuses it naming the field at fault or accepts it. The zod parse was
 * 4.6 KB of garbage per enqueue, a sixth of the producer's (zod copies every params key through
 * a record schema); this copies params and context once each.
 */
export function readJobInput(raw: unknown): ParsedJobInput | undefined {
  if (!isLiteralObject(raw)) return undefined;
  for (const key in raw) if (!INPUT_KEYS.has(key)) return undefined;
  const { actionId, params, context } = raw;
  if (typeof actionId !== 'string' || !ACTION_ID.test(actionId)) return undefined;
  const p = params === undefined ? {} : copyRecord(params);
  const c = context === undefined ? {} : copyRecord(context);
  if (!p || !c) return undefined;
  const value: ParsedJobInput = { actionId, params: p, context: c };
  for (const [key, ok] of OPTIONAL_FIELDS) {
    const v = raw[key];
    if (v !== undefined && !ok(v)) return undefined;
    // Given as undefined, the field stays, as zod keeps it.
    if (key in raw) (value as Record<OptionalField, unknown>)[key] = v;
  }
  return value;
}

/**
 * An object literal: Object.prototype, not an array, no Proxy (zod asks `in` where this reads),
 * no function as a `constructor` of its own (zod judges a record by it). Other objects are left
 * to zod.
 */
function isLiteralObject(v: unknown): v is Record<string, unknown> {
  return (
    typeof v === 'object' &&
    v !== null &&
    Object.getPrototypeOf(v) === Object.prototype &&
    !Array.isArray(v) &&
    !isProxy(v) &&
    !(Object.hasOwn(v, 'constructor') && typeof (v as { constructor: unknown }).constructor === 'function')
  );
}

/** What zod's record of string keys makes of an object literal: its own enumerable keys, __proto__ left out; undefined for a symbol key. */
function copyRecord(v: unknown): Record<string, unknown> | undefined {
  if (!isLiteralObject(v)) return undefined;
  const out: Record<string, unknown> = {};
  for (const key of Reflect.ownKeys(v)) {
    if (typeof key !== 'string') return undefined;
    if (key === '__proto__' || !Object.prototype.propertyIsEnumerable.call(v, key)) continue;
    out[key] = v[key];
  }
  return out;
}

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
 * The orderingKey of a job's stored data even when the rest of it is malformed: the job ends dead
 * then (bad input), and its line must still hand over to the next job, or it stays blocked.
 */
export function orderingKeyOf(raw: unknown): string | undefined {
  const key = isRecord(raw) ? raw.orderingKey : undefined;
  return typeof key === 'string' && key !== '' ? key : undefined;
}

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
