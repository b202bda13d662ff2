import { randomUUID } from 'node:crypto';
import type { Queue, JobsOptions } from 'bullmq';
import type { ActionStore } from '../actions/action-store.js';
import { ValidationError, type FieldProblem } from '../errors/errors.js';
import { formatIssues } from '../actions/param-validator.js';
import { jobInputSchema, type JobData, type JobInput } from './job-schema.js';

export interface EnqueueResult {
  jobId: string;
  /** True when a job with the same idempotency key already existed: no new job was made. */
  deduplicated: boolean;
}

export type EnqueueManyItem = EnqueueResult | { error: { code: string; message: string; details: FieldProblem[] } };

export interface Producer {
  /** Validates one job against its action and enqueues it; throws ValidationError naming every bad field. */
  enqueue(input: JobInput): Promise<EnqueueResult>;
  /** Enqueues many; each item gets its own result or error, in input order. */
  enqueueMany(inputs: readonly unknown[]): Promise<EnqueueManyItem[]>;
}

export interface ProducerDeps {
  queue: Queue;
  store: ActionStore;
  /** How long an idempotency key deduplicates. */
  idempotencyTtlMs: number;
}

/** Most jobs one enqueueMany call accepts. */
export const MAX_BATCH = 1000;

export function createProducer(deps: ProducerDeps): Producer {
  const { queue, store } = deps;

  async function prepare(raw: unknown, root: string): Promise<{ name: string; data: JobData; opts: JobsOptions }> {
    const parsed = jobInputSchema.safeParse(raw);
    if (!parsed.success) throw new ValidationError('invalid job', formatIssues(parsed.error, root, raw));
    const input = parsed.data;
    const action = await store.getCompiled(input.actionId);
    if (!action) {
      throw new ValidationError('invalid job', [
        { path: `${root ? `${root}.` : ''}actionId`, message: `action "${input.actionId}" is not defined` },
      ]);
    }
    const checked = action.validateParams(input.params);
    if (!checked.ok) {
      throw new ValidationError(
        'invalid job',
        checked.problems.map((p) => ({ ...p, path: root ? `${root}.${p.path}` : p.path })),
      );
    }
    const data: JobData = { params: input.params, context: input.context };
    const opts: JobsOptions = { jobId: randomUUID() };
    if (input.idempotencyKey !== undefined) {
      data.idempotencyKey = input.idempotencyKey;
      opts.deduplication = { id: input.idempotencyKey, ttl: deps.idempotencyTtlMs };
    }
    if (input.delayMs) opts.delay = input.delayMs;
    return { name: input.actionId, data, opts };
  }

  return {
    async enqueue(input) {
      const job = await prepare(input, '');
      const added = await queue.add(job.name, job.data, job.opts);
      return { jobId: added.id as string, deduplicated: added.id !== job.opts.jobId };
    },
    async enqueueMany(inputs) {
      if (inputs.length > MAX_BATCH) {
        throw new ValidationError('invalid batch', [{ path: 'jobs', message: `at most ${MAX_BATCH} jobs per batch` }]);
      }
      const prepared = await Promise.all(
        inputs.map((raw, i) =>
          prepare(raw, `jobs[${i}]`).then(
            (job) => ({ job }),
            (err: unknown) => ({ err }),
          ),
        ),
      );
      const valid = prepared.flatMap((p) => ('job' in p ? [p.job] : []));
      const added = valid.length > 0 ? await queue.addBulk(valid) : [];
      let next = 0;
      return prepared.map((p): EnqueueManyItem => {
        if ('job' in p) {
          const a = added[next++];
          return { jobId: a?.id as string, deduplicated: a?.id !== p.job.opts.jobId };
        }
        const err = p.err;
        if (err instanceof ValidationError) {
          return { error: { code: err.code, message: err.message, details: err.problems } };
        }
        throw err;
      });
    },
  };
}
