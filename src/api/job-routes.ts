import type { FastifyInstance } from 'fastify';
import type { RelayContext } from '../context/relay-context.js';
import { ValidationError } from '../errors/errors.js';
import { getJobStatus } from '../queue/job-status.js';
import { getStats } from '../queue/stats.js';
import { isJobId } from '../queue/job-id.js';
import { boundBatchErrors, sendError } from './api-errors.js';
import { withTraceparentHeader } from '../telemetry/trace-context.js';

export function registerJobRoutes(app: FastifyInstance, ctx: RelayContext): void {
  app.post('/v1/jobs', async (req, reply) => {
    const result = await ctx.producer.enqueue(withTraceparentHeader(req.body, req.headers.traceparent) as never);
    return reply.code(202).send(result);
  });

  app.post('/v1/jobs/batch', async (req, reply) => {
    const body = req.body as { jobs?: unknown } | null;
    if (!body || !Array.isArray(body.jobs)) {
      throw new ValidationError('invalid batch', [{ path: 'jobs', message: 'expected a list of jobs' }]);
    }
    const results = await ctx.producer.enqueueMany(body.jobs.map((job: unknown) => withTraceparentHeader(job, req.headers.traceparent)));
    return reply.code(202).send({ results: boundBatchErrors(results) });
  });

  app.get<{ Params: { jobId: string } }>('/v1/jobs/:jobId', async (req, reply) => {
    const status = isJobId(req.params.jobId) ? await getJobStatus(ctx.queues, ctx.redis, req.params.jobId) : null;
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
