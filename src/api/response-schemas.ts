import { z } from 'zod';
import { actionDefinitionSchema } from '../actions/action-schema.js';
import { DEAD_REASONS, type DeadReason, type FieldProblem } from '../errors/errors.js';
import type { DlqSummary } from '../queue/dead-letters.js';
import type { JobStatus } from '../queue/job-status.js';
import type { AttemptRecord, DeadLetterRecord } from '../queue/outcome-writer.js';
import type { EnqueueManyItem, EnqueueResult } from '../queue/producer.js';
import type { QueueStats } from '../queue/stats.js';
import type { ApiErrorBody } from './api-errors.js';

/*
 * The shapes the API answers with, for the OpenAPI document. The code that builds these answers
 * declares them as TypeScript types; the checks at the end of this file fail to compile when one of
 * those types and its schema here drift apart, so the document cannot silently go stale.
 */

const fieldProblemSchema = z.object({ path: z.string(), message: z.string() });

/** `{ error: { code, message, details? } }` (docs/api.md, "Errors"). */
export const errorBodySchema = z.object({
  error: z.object({
    code: z.string(),
    message: z.string(),
    /** Each bad field (`{ path, message }`), or more about the failure. */
    details: z.union([z.array(fieldProblemSchema), z.record(z.string(), z.unknown())]).optional(),
  }),
});

export const healthSchema = z.object({ status: z.literal('ok') });
export const readySchema = z.object({ status: z.literal('ready') });

export const savedActionSchema = z.object({ id: z.string(), version: z.number().int() });

export const storedActionSchema = z.object({
  id: z.string(),
  version: z.number().int(),
  updatedAt: z.iso.datetime(),
  definition: actionDefinitionSchema,
});
export const actionListSchema = z.object({ items: z.array(storedActionSchema) });
export const actionDeletedSchema = z.object({ id: z.string(), deleted: z.literal(true) });

/** A request as preview and test show it: credentials masked. */
export const describedRequestSchema = z.object({
  method: z.string(),
  url: z.string(),
  headers: z.record(z.string(), z.string()),
  body: z.unknown().optional(),
});

export const testResultSchema = z.object({
  request: describedRequestSchema,
  response: z.object({
    status: z.number().int(),
    headers: z.record(z.string(), z.union([z.string(), z.array(z.string())])),
    /** Parsed when the answer is JSON, else text; secrets echoed back are masked. */
    body: z.unknown(),
    /** The body was longer than RESPONSE_MAX_BYTES and was cut. */
    truncated: z.boolean(),
    /** Why a JSON body is shown as text: nested deeper than a request body may be. */
    note: z.string().optional(),
  }),
  durationMs: z.number(),
});

export const enqueueResultSchema = z.object({
  jobId: z.string(),
  /** True when a job with the same idempotency key already existed: no new job was made. */
  deduplicated: z.boolean(),
});

export const batchResultSchema = z.object({
  results: z.array(
    z.union([
      enqueueResultSchema,
      z.object({ error: z.object({ code: z.string(), message: z.string(), details: z.array(fieldProblemSchema) }) }),
    ]),
  ),
});

export const jobStatusSchema = z.object({
  jobId: z.string(),
  actionId: z.string(),
  state: z.enum(['waiting', 'delayed', 'active', 'delivered', 'dead']),
  attempts: z.number().int(),
  result: z.object({ status: z.number().int().nullable(), response: z.record(z.string(), z.unknown()) }).optional(),
  error: z
    .object({
      reason: z.string(),
      status: z.number().int().nullable(),
      message: z.string(),
      /** A dead job's errorResponse fields, captured from the last answer (`{}` when none). */
      errorResponse: z.record(z.string(), z.unknown()).optional(),
    })
    .optional(),
  /** Set on a dead job that was replayed: the id of the new job. */
  replayedAs: z.string().optional(),
});

export const deadReasonSchema = z.enum(DEAD_REASONS);

export const dlqSummarySchema = z.object({
  jobId: z.string(),
  actionId: z.string(),
  reason: z.string(),
  status: z.number().int().nullable(),
  attempts: z.number().int(),
  failedAt: z.iso.datetime(),
});
export const dlqPageSchema = z.object({
  items: z.array(dlqSummarySchema),
  /** Pass as `cursor` for the next page; null on the last. */
  nextCursor: z.string().nullable(),
});

export const attemptRecordSchema = z.object({
  attempt: z.number().int(),
  startedAt: z.iso.datetime(),
  durationMs: z.number(),
  request: z.object({ method: z.string(), url: z.string(), headers: z.record(z.string(), z.string()) }),
  response: z
    .object({
      status: z.number().int(),
      headers: z.record(z.string(), z.union([z.string(), z.array(z.string())])),
      /** The first 4 KiB. */
      body: z.string(),
    })
    .optional(),
  error: z.object({ code: z.string(), message: z.string() }).optional(),
});

/** The whole dead-letter record (docs/delivery.md, "Dead letters"), every secret redacted. */
export const deadLetterRecordSchema = z.object({
  jobId: z.string(),
  actionId: z.string(),
  job: z.object({
    actionId: z.string(),
    params: z.record(z.string(), z.unknown()),
    context: z.record(z.string(), z.unknown()),
    idempotencyKey: z.string().optional(),
    enqueuedAt: z.iso.datetime(),
    /** Set on a replayed job: the dead letter it came from. */
    replayOf: z.string().optional(),
    orderingKey: z.string().optional(),
  }),
  reason: deadReasonSchema,
  status: z.number().int().nullable(),
  failedAt: z.iso.datetime(),
  /** The action's errorResponse fields captured from the last answer (`{}` when none). */
  errorResponse: z.record(z.string(), z.unknown()).optional(),
  attempts: z.array(attemptRecordSchema),
});

export const replayResultSchema = z.union([
  z.object({
    replayed: z.number().int(),
    /** Each dead job replayed (`from`) and the id of its new job (`jobId`). */
    replays: z.array(z.object({ from: z.string(), jobId: z.string() })),
    /** The new ids, in the order of `replays`. */
    jobIds: z.array(z.string()),
  }),
  /** A dry run: the dead ids that would be replayed. */
  z.object({ matched: z.number().int(), jobIds: z.array(z.string()) }),
]);

export const purgedSchema = z.object({ purged: z.number().int() });

const queueCountsSchema = z.object({
  waiting: z.number().int(),
  delayed: z.number().int(),
  active: z.number().int(),
  /** Jobs delivered since the deployment's data was created. */
  delivered: z.number().int(),
  /** Jobs dead-lettered since the deployment's data was created. */
  dead: z.number().int(),
  /** Jobs in BullMQ's failed set (stalled too often, or a fault of the relay itself). */
  failed: z.number().int(),
});
export const statsSchema = z.object({
  /** Summed over every partition. */
  queue: queueCountsSchema,
  /** Dead letters kept. */
  dlq: z.number().int(),
  /** Entries on the results streams. */
  results: z.number().int(),
  /** Jobs with an orderingKey waiting behind an earlier job of their key (not yet in the queue, so not in `queue`). */
  waitingInLine: z.number().int(),
  /** One entry per partition (QUEUE_PARTITIONS). */
  partitions: z.array(
    z.object({
      index: z.number().int(),
      /** The BullMQ queue's key prefix, `<bullPrefix>:deliveries`. */
      queue: z.string(),
      /** The results stream of this partition's jobs. */
      results: z.string(),
      counts: queueCountsSchema,
      dlq: z.number().int(),
      resultsLength: z.number().int(),
      waitingInLine: z.number().int(),
    }),
  ),
});

// ---- Drift checks: each line fails to compile when a schema above and the type the code answers with differ.

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
type Expect<T extends true> = T;
type _ResponsesMatchTheCode = [
  Expect<Equal<z.infer<typeof errorBodySchema>, ApiErrorBody>>,
  Expect<Equal<z.infer<typeof fieldProblemSchema>, FieldProblem>>,
  Expect<Equal<z.infer<typeof enqueueResultSchema>, EnqueueResult>>,
  Expect<Equal<z.infer<typeof batchResultSchema>['results'][number], EnqueueManyItem>>,
  Expect<Equal<z.infer<typeof jobStatusSchema>, JobStatus>>,
  Expect<Equal<z.infer<typeof dlqSummarySchema>, DlqSummary>>,
  Expect<Equal<z.infer<typeof deadReasonSchema>, DeadReason>>,
  Expect<Equal<z.infer<typeof attemptRecordSchema>, AttemptRecord>>,
  Expect<Equal<z.infer<typeof deadLetterRecordSchema>, DeadLetterRecord>>,
  Expect<Equal<z.infer<typeof statsSchema>, QueueStats>>,
];
