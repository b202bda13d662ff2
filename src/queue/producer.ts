import { randomUUID } from 'node:crypto';
import type { JobsOptions } from 'bullmq';
import type { ActionStore } from '../actions/action-store.js';
import { InvalidParamsError, ValidationError, type FieldProblem } from '../errors/errors.js';
import { formatIssues } from '../actions/param-validator.js';
import { jobInputSchema, readJobInput, type JobData, type JobInput, type ParsedJobInput } from './job-schema.js';
import { FRESH_PRIORITY, type DeliveryQueues, type QueuePartition } from './delivery-queue.js';
import { bullDeduplicationKey } from './bullmq-internals.js';
import type { RedisClient } from '../redis/redis-connection.js';
import { queueJob, type LineEntry, type Ordering, type OrderedJob } from './ordering.js';
import { noTracing, type EnqueueSpan, type Tracing } from '../telemetry/tracing.js';

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
  /** Each job goes to the partition of its action's rate-limit key. */
  queues: DeliveryQueues;
  store: ActionStore;
  /** Where jobs with an orderingKey wait their turn. */
  ordering: Ordering;
  /** How long an idempotency key deduplicates. */
  idempotencyTtlMs: number;
  /** Largest params + context of one job, serialized as JSON (JOB_MAX_BYTES). @defaultValue 262144 */
  maxJobBytes?: number;
  /** Each job gets an enqueue span under its caller's traceparent. @defaultValue noTracing */
  tracing?: Tracing;
}

interface PreparedJob {
  name: string;
  data: JobData;
  opts: JobsOptions;
  partition: QueuePartition;
  span: EnqueueSpan;
  /** Set for a job with an orderingKey: it goes into its line first, and into the queue when first in it. */
  ordered?: OrderedJob;
}

/** Most jobs one enqueueMany call accepts. */
export const MAX_BATCH = 1000;

/**
 * Batches of up to this many jobs (per partition) are added one call per job, not by addBulk:
 * addBulk builds an ioredis pipeline per call, which copies a method per loaded script (BullMQ
 * loads some fifty), about 60 µs of CPU and 15 KB of garbage whatever the batch's size. Either way
 * each job is its own script call, run in the order sent, so the outcome is the same.
 */
export const FEW_JOBS = 4;

/** Default of JOB_MAX_BYTES: a job is a journey step's few fields, not a payload store. */
export const DEFAULT_MAX_JOB_BYTES = 256 * 1024;

/**
 * Bytes of `value` as JSON. A value JSON cannot carry (a BigInt, a cycle, a throwing toJSON) is
 * the caller's error, a ValidationError naming the field, not a TypeError (a 500, or a whole batch lost).
 */
function jsonBytes(value: Record<string, unknown>, field: 'params' | 'context', root: string): number {
  try {
    return Buffer.byteLength(JSON.stringify(value));
  } catch (err: unknown) {
    const why = err instanceof Error ? err.message : String(err);
    throw new ValidationError('invalid job', [{ path: root ? `${root}.${field}` : field, message: `not serializable as JSON: ${why}` }]);
  }
}

/** Refuses params + context larger than `max` bytes of JSON, naming the larger of the two. */
function checkJobSize(params: Record<string, unknown>, context: Record<string, unknown>, max: number, root: string): void {
  const p = jsonBytes(params, 'params', root);
  const c = jsonBytes(context, 'context', root);
  if (p + c <= max) return;
  const field = p >= c ? 'params' : 'context';
  throw new ValidationError('invalid job', [
    {
      path: root ? `${root}.${field}` : field,
      message: `params and context are ${p + c} bytes serialized (${field} ${Math.max(p, c)}); at most ${max} (JOB_MAX_BYTES)`,
    },
  ]);
}

/** A job that readJobInput did not take as it came: zod's answer, or ValidationError naming each field at fault. */
function parseJobInput(raw: unknown, root: string): ParsedJobInput {
  const parsed = jobInputSchema.safeParse(raw);
  if (!parsed.success) throw new ValidationError('invalid job', formatIssues(parsed.error, root, raw));
  return parsed.data;
}

/**
 * The key one enqueue is deduplicated on: the same idempotency key on two actions is two jobs (a
 * journey may use one order id for "send SMS" and "update CRM"). An action id holds no ':', so
 * no two pairs share an id. All jobs of an action go to one partition, where BullMQ looks it up.
 */
export function deduplicationId(actionId: string, idempotencyKey: string): string {
  return `${actionId}:${idempotencyKey}`;
}

export function createProducer(deps: ProducerDeps): Producer {
  const { queues, store } = deps;
  const tracing = deps.tracing ?? noTracing;

  async function prepare(raw: unknown, root: string): Promise<PreparedJob> {
    const input = readJobInput(raw) ?? parseJobInput(raw, root);
    checkJobSize(input.params, input.context, deps.maxJobBytes ?? DEFAULT_MAX_JOB_BYTES, root);
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
    const opts: JobsOptions = { jobId: randomUUID(), priority: FRESH_PRIORITY };
    try {
      // Render once now: a value that could never be sent (CR/LF into a header) is the caller's error, not a dead job later.
      const jobId = opts.jobId as string;
      action.buildRequest({
        params: checked.value,
        context: input.context,
        job: { id: jobId, attempt: 1, idempotencyKey: input.idempotencyKey ?? jobId },
      });
    } catch (err: unknown) {
      if (!(err instanceof InvalidParamsError)) throw err;
      throw new ValidationError(
        'invalid job',
        err.problems.map((p) => ({ ...p, path: root ? `${root}.${p.path}` : p.path })),
      );
    }
    if (input.idempotencyKey !== undefined) {
      // The request headers carry the caller's key as given; only the queue's lookup is per action.
      data.idempotencyKey = input.idempotencyKey;
      opts.deduplication = { id: deduplicationId(input.actionId, input.idempotencyKey), ttl: deps.idempotencyTtlMs };
    }
    if (input.delayMs) opts.delay = input.delayMs;
    // Started last, once the job is known good: a refused job leaves no span.
    const span = tracing.enqueueSpan({ actionId: input.actionId, jobId: opts.jobId as string, traceparent: input.traceparent });
    if (span.traceparent !== undefined) data.traceparent = span.traceparent;
    // An idempotency key deduplicates within the partition, that is among jobs of one rate-limit key.
    const partition = await partitionFor(queues.forLimitKey(action.limitKey), input.actionId, opts.deduplication?.id, input.orderingKey);
    const job: PreparedJob = { name: input.actionId, data, opts, partition, span };
    if (input.orderingKey !== undefined) {
      data.orderingKey = input.orderingKey;
      job.ordered = orderedJob(job, input.orderingKey);
    }
    return job;
  }

  /**
   * The partition of a job with an idempotency or ordering key: its action's (by the rate-limit key),
   * unless another partition still holds that idempotency key or a line of that ordering key, as
   * happens when the action's rate-limit key (by default its endpoint's host:port) changed since.
   * The job joins them there: the key stays one job, and the line stays in order. One round trip
   * more per such job, only with several partitions.
   */
  async function partitionFor(
    home: QueuePartition,
    actionId: string,
    dedupId: string | undefined,
    orderingKey: string | undefined,
  ): Promise<QueuePartition> {
    if (queues.partitions.length === 1 || (dedupId === undefined && orderingKey === undefined)) return home;
    // One EXISTS per partition: both keys carry the partition's hash tag.
    const holds = async (p: QueuePartition): Promise<boolean> => {
      const keys = [
        ...(dedupId === undefined ? [] : [bullDeduplicationKey(p.keys, dedupId)]),
        ...(orderingKey === undefined ? [] : [p.keys.orderingLine(actionId, orderingKey)]),
      ];
      // BullMQ's own connection: an ioredis client, whatever BullMQ's narrower type says.
      const client = (await p.queue.client) as unknown as RedisClient;
      return (await client.exists(...keys)) > 0;
    };
    const others = queues.partitions.filter((p) => p !== home);
    const [atHome, ...elsewhere] = await Promise.all([holds(home), ...others.map(holds)]);
    if (atHome) return home;
    const i = elsewhere.indexOf(true);
    return i < 0 ? home : (others[i] as QueuePartition);
  }

  function orderedJob({ name, data, opts }: PreparedJob, orderingKey: string): OrderedJob {
    // The data as BullMQ stores it, so that the finish script can add the job itself when its turn comes.
    const entry: LineEntry = {
      jobId: opts.jobId as string,
      name,
      data: JSON.stringify(data),
      priority: FRESH_PRIORITY,
      enqueuedAt: Date.now(),
    };
    if (opts.delay) entry.delayMs = opts.delay;
    const dedup = opts.deduplication;
    return { entry, orderingKey, ...(dedup ? { deduplication: { id: dedup.id, ttlMs: dedup.ttl ?? deps.idempotencyTtlMs } } : {}) };
  }

  /** Puts an ordered job in its line; returns the BullMQ add to make when it is first in it. */
  async function line(job: PreparedJob & { ordered: OrderedJob }): Promise<{ result: EnqueueResult; add?: PreparedJob }> {
    const { jobId, state } = await deps.ordering.enqueue(job.partition.keys, job.ordered);
    const result = { jobId, deduplicated: state === 'duplicate' };
    if (state !== 'go') return { result };
    const { name, data, opts } = queueJob(job.ordered.entry, Date.now());
    return { result, add: { name, data, opts, partition: job.partition, span: job.span } };
  }

  const isOrdered = (job: PreparedJob): job is PreparedJob & { ordered: OrderedJob } => job.ordered !== undefined;

  return {
    async enqueue(input) {
      const job = await prepare(input, '');
      try {
        let result: EnqueueResult;
        if (isOrdered(job)) {
          const lined = await job.span.run(() => line(job));
          const add = lined.add;
          if (add) await job.span.run(() => add.partition.queue.add(add.name, add.data, add.opts));
          result = lined.result;
        } else {
          const added = await job.span.run(() => job.partition.queue.add(job.name, job.data, job.opts));
          result = { jobId: added.id as string, deduplicated: added.id !== job.opts.jobId };
        }
        job.span.end();
        return result;
      } catch (err: unknown) {
        job.span.end(err);
        throw err;
      }
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
      // A job that failed for another reason than its own content (Redis could not read its
      // action...): the batch fails as a whole, before anything is added, so that a retry of the
      // whole batch enqueues no job twice.
      const failure = prepared.find((p): p is { err: unknown } => 'err' in p && !(p.err instanceof ValidationError));
      if (failure) {
        for (const p of prepared) if ('job' in p) p.job.span.end(failure.err);
        throw failure.err;
      }
      // The same idempotency key twice in the batch: the first of the list is the job, the later
      // ones its duplicates, as if sent one after another (ordered jobs take their place in line
      // before the others are added, so Redis alone would keep an ordered later one).
      const firstOf = new Map<string, PreparedJob>();
      const duplicateOf = new Map<PreparedJob, PreparedJob>();
      for (const p of prepared) {
        if (!('job' in p)) continue;
        const id = p.job.opts.deduplication?.id;
        if (id === undefined) continue;
        const first = firstOf.get(id);
        if (first) duplicateOf.set(p.job, first);
        else firstOf.set(id, p.job);
      }
      // Ordered jobs take their place in line in input order (one connection: Redis runs the
      // scripts in the order sent); those first in line are added with the others.
      const lined = new Map<string, EnqueueResult>();
      const toAdd: PreparedJob[] = [];
      await Promise.all(
        prepared.map(async (p) => {
          if (!('job' in p)) return;
          if (duplicateOf.has(p.job)) return void p.job.span.end();
          if (!isOrdered(p.job)) return void toAdd.push(p.job);
          const { result, add } = await line(p.job).catch((err: unknown) => {
            p.job.span.end(err);
            throw err;
          });
          lined.set(p.job.opts.jobId as string, result);
          if (add) toAdd.push(add);
          else p.job.span.end();
        }),
      );
      // One addBulk per partition (each is one slot of a Redis Cluster), all at once; a few jobs
      // are added one by one (see FEW_JOBS).
      const byPartition = new Map<QueuePartition, PreparedJob[]>();
      for (const job of toAdd) {
        const list = byPartition.get(job.partition);
        if (list) list.push(job);
        else byPartition.set(job.partition, [job]);
      }
      const addedIds = new Map<string, string>();
      await Promise.all(
        [...byPartition].map(async ([partition, jobs]) => {
          try {
            const added =
              jobs.length <= FEW_JOBS
                ? await Promise.all(jobs.map(({ name, data, opts }) => partition.queue.add(name, data, opts)))
                : await partition.queue.addBulk(jobs.map(({ name, data, opts }) => ({ name, data, opts })));
            added.forEach((a, i) => addedIds.set(jobs[i]?.opts.jobId as string, a.id as string));
            for (const job of jobs) job.span.end();
          } catch (err: unknown) {
            for (const job of jobs) job.span.end(err);
            throw err;
          }
        }),
      );
      const resultOf = (job: PreparedJob): EnqueueResult => {
        const inLine = lined.get(job.opts.jobId as string);
        if (inLine) return inLine;
        const id = addedIds.get(job.opts.jobId as string) as string;
        return { jobId: id, deduplicated: id !== job.opts.jobId };
      };
      return prepared.map((p): EnqueueManyItem => {
        if ('job' in p) {
          const first = duplicateOf.get(p.job);
          return first ? { jobId: resultOf(first).jobId, deduplicated: true } : resultOf(p.job);
        }
        // Only ValidationErrors are left (any other error was thrown above, before adding).
        const err = p.err as ValidationError;
        return { error: { code: err.code, message: err.message, details: err.problems } };
      });
    },
  };
}
