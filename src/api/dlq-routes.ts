import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { RelayContext } from '../context/relay-context.js';
import { ValidationError } from '../errors/errors.js';
import { formatIssues } from '../actions/param-validator.js';
import { dlqCursorSchema, dlqFilterSchema } from '../queue/dead-letters.js';
import { hasExplicitSelection, purgeDeadLetters, replayDeadLetters, replayRequestSchema } from '../queue/dlq-operations.js';
import { isJobId } from '../queue/job-id.js';
import { auditTouched } from './access-control.js';
import { sendError } from './api-errors.js';

/** Query of GET /v1/dlq. */
export const listQuerySchema = dlqFilterSchema.extend({
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  cursor: dlqCursorSchema.optional(),
});

/** Body of POST /v1/dlq/purge. */
export const purgeRequestSchema = z.strictObject({
  filter: dlqFilterSchema.optional(),
  jobIds: z.array(z.string()).optional(),
  all: z.literal(true).optional(),
});

const NO_SELECTION = [{ path: 'jobIds', message: 'give jobIds, a filter with at least one field, or all: true' }];

function parse<T extends z.ZodType>(schema: T, input: unknown): z.infer<T> {
  const parsed = schema.safeParse(input ?? {});
  if (!parsed.success) throw new ValidationError('invalid request', formatIssues(parsed.error, '', input));
  return parsed.data;
}

export function registerDlqRoutes(app: FastifyInstance, ctx: RelayContext): void {
  const dl = ctx.deadLetters;

  app.get('/v1/dlq', async (req) => {
    const { limit, cursor, ...filter } = parse(listQuerySchema, req.query);
    return dl.list(filter, limit, cursor);
  });

  app.get<{ Params: { jobId: string } }>('/v1/dlq/:jobId', async (req, reply) => {
    // Ids are made lower case; isJobId takes either case, so the lookup does too.
    const rec = isJobId(req.params.jobId) ? await dl.get(req.params.jobId.toLowerCase()) : null;
    if (!rec) return sendError(reply, 404, 'not_found', `no dead letter for job "${req.params.jobId}"`);
    return rec;
  });

  app.post('/v1/dlq/replay', async (req) => {
    const body = parse(replayRequestSchema, req.body);
    if (!hasExplicitSelection(body)) throw new ValidationError('invalid request', NO_SELECTION);
    const r = await replayDeadLetters(dl, body);
    if (body.dryRun) return { matched: r.matched, jobIds: r.matchedIds };
    // jobIds: the new ids, in the order of `replays` (kept for clients of the earlier answer).
    return { replayed: r.replayed, replays: r.replays, jobIds: r.replays.map((m) => m.jobId) };
  });

  app.delete<{ Params: { jobId: string } }>('/v1/dlq/:jobId', async (req, reply) => {
    const purged = isJobId(req.params.jobId) ? await dl.remove([req.params.jobId.toLowerCase()]) : 0;
    // A mistyped id must not read as done.
    if (purged === 0) return sendError(reply, 404, 'not_found', `no dead letter for job "${req.params.jobId}"`);
    return { purged };
  });

  app.post('/v1/dlq/purge', async (req) => {
    const body = parse(purgeRequestSchema, req.body);
    if (!hasExplicitSelection(body)) throw new ValidationError('invalid request', NO_SELECTION);
    const selected: string[] = [];
    const purged = await purgeDeadLetters(dl, body.jobIds, body.filter ?? {}, undefined, (ids) => selected.push(...ids));
    auditTouched(req, selected);
    return { purged };
  });
}
