import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { RelayContext } from '../context/relay-context.js';
import { ValidationError } from '../errors/errors.js';
import { formatIssues } from '../actions/param-validator.js';
import { getJobStatus } from '../queue/job-status.js';
import { getStats } from '../queue/stats.js';
import { isJobId } from '../queue/job-id.js';
import { boundBatchErrors, sendError } from './api-errors.js';
import { withTraceparentHeader } from '../telemetry/trace-context.js';

/**
 * Body of POST /v1/jobs/batch as the route reads it: unknown top-level fields are refused (a
 * batch-level `delayMs` would otherwise be dropped silently); each job is checked on its own by
 * the producer, so that one bad job is that job's error, not the batch's.
 */
export const jobBatchBodySchema = z.strictObject({ jobs: z.array(z.unknown(), { error: 'expected a list of jobs' }) });

export function registerJobRoutes(app: FastifyInstance, ctx: RelayContext): void {
  app.post('/v1/jobs', async (req, reply) => {
    const result = await ctx.producer.enqueue(withTraceparentHeader(req.body, req.headers.traceparent) as never);
    return reply.code(202).send(result);
  });

  app.post('/v1/jobs/batch', async (req, reply) => {
    const parsed = jobBatchBodySchema.safeParse(req.body ?? {});
    if (!parsed.success) throw new ValidationError('invalid batch', formatIssues(parsed.error, '', req.body));
    const body = parsed.data;
    const results = await ctx.producer.enqueueMany(body.jobs.map((job: unknown) => withTraceparentHeader(job, req.headers.traceparent)));
    return reply.code(202).send({ results: boundBatchErrors(results) });
  });

  app.get<{ Params: { jobId: string } }>('/v1/jobs/:jobId', async (req, reply) => {
    // Ids are made lower case; isJobId takes either case, so the lookup does too.
    const status = isJobId(req.params.jobId) ? await getJobStatus(ctx.queues, ctx.redis, req.params.jobId.toLowerCase()) : null;
    if (!status)
      return sendError(
        reply,
        404,
        'not_found',
        `job "${req.params.jobId}" is not known (finished jobs are kept ${ctx.config.JOB_RETENTION_SECONDS} s)`,
      );
    return status;
  });

  app.get('/v1/stats', async () => getStats(ctx.queues, ctx.redis));
}
