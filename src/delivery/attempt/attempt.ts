import type { Job } from 'bullmq';
import type { Logger } from 'pino';
import type { ActionStore } from '../../actions/action-store.js';
import type { CompiledAction } from '../../actions/compile-action.js';
import type { RenderScope } from '../../actions/template.js';
import type { JobData } from '../../queue/job-schema.js';
import type { OutcomeWriter } from '../../queue/outcome-writer.js';
import type { PartitionKeys, RedisClient } from '../../redis/redis-connection.js';
import type { CircuitBreaker } from '../circuit-breaker.js';
import type { DeliveryEvents } from '../delivery-events.js';
import type { HttpSender, SentResponse } from '../http-sender.js';
import type { PreparedRequest } from '../prepare-request.js';
import type { RateLimiter } from '../rate-limiter.js';
import type { SecretResolver } from '../secret-resolver.js';
import type { TokenProvider } from '../token-provider.js';

/** What every attempt of a worker process shares: its dependencies and settings, built once. */
export interface PipelineContext {
  connection: RedisClient;
  store: ActionStore;
  sender: HttpSender;
  secrets: SecretResolver;
  tokens: TokenProvider | undefined;
  outcomes: OutcomeWriter;
  rateLimiter: RateLimiter | undefined;
  circuitBreaker: CircuitBreaker | undefined;
  events: DeliveryEvents;
  logger: Logger;
  /** A child of `logger` bound to one action: its bindings are serialized once, not per line. */
  actionLogger(actionId: string): Logger;
  maxResponseBytes: number;
  /** An action's timeoutMs is clamped to it. */
  timeoutCapMs: number;
  now: () => number;
  random: () => number;
  /** Back-pressure pauses per rate-limit key as last read, for actions without a rateLimit. */
  pauses: Map<string, PauseEntry>;
  redact: (s: string) => string;
}

/** What a worker knows of a rate-limit key's back-pressure pause. */
export interface PauseEntry {
  until: number;
  checkedAt: number;
  /** A read of the pause under way: the jobs that start meanwhile wait for its answer. */
  reading?: Promise<number>;
}

/** An attempt whose job data and action are known (after the load step). */
export interface LoadedAttempt extends Attempt {
  action: CompiledAction;
  data: JobData;
  scope: RenderScope;
}

/**
 * One attempt at delivering one job: what each step of the pipeline learned, in the order the
 * steps run. Fields are set by the step named in their comment and read by the later ones.
 */
export interface Attempt {
  readonly job: Job;
  readonly jobId: string;
  /** 1 for the first attempt. */
  readonly number: number;
  readonly startedAt: number;
  readonly partition: PartitionKeys;
  /** BullMQ's lock token, needed to move the job. */
  readonly token: string | undefined;
  /** load: the compiled action, null when unknown (or not loaded yet). */
  action: CompiledAction | null;
  /** load: the job's validated data. */
  data: JobData | undefined;
  /** load: what templates render from. */
  scope: RenderScope | undefined;
  /** gates: this attempt is its circuit's half-open probe. */
  probe: boolean;
  /** gates: when the request's rate-limit slot was taken (-1: none taken). */
  slotAt: number;
  /** send: an in-flight permit is held, given back once the outcome is written. */
  permit: boolean;
  /** prepare / send: the request as last sent (the refreshed one after a 401). */
  prepared: PreparedRequest | undefined;
  /** send: the third party's answer. */
  res: SentResponse | undefined;
  /** A logger bound to the job, made on first use (a child costs a bindings serialization). */
  log(): Logger;
}

export function startAttempt(ctx: PipelineContext, job: Job, partition: PartitionKeys, token: string | undefined): Attempt {
  const jobId = job.id as string;
  const number = job.attemptsMade + 1;
  let child: Logger | undefined;
  return {
    job,
    jobId,
    number,
    startedAt: ctx.now(),
    partition,
    token,
    action: null,
    data: undefined,
    scope: undefined,
    probe: false,
    slotAt: -1,
    permit: false,
    prepared: undefined,
    res: undefined,
    log: () => (child ??= ctx.actionLogger(job.name).child({ jobId, attempt: number })),
  };
}

/** An action's request timeout, clamped to the process's cap. */
export function requestTimeoutMs(ctx: PipelineContext, action: CompiledAction): number {
  return Math.min(action.definition.endpoint.timeoutMs, ctx.timeoutCapMs);
}

/** Bound on cached action loggers: action ids come from definitions, but never trust a count. */
const MAX_ACTION_LOGGERS = 10_000;

/** Per-action child loggers, made once per action id. */
export function actionLoggers(logger: Logger): (actionId: string) => Logger {
  const cache = new Map<string, Logger>();
  return (actionId) => {
    let child = cache.get(actionId);
    if (!child) {
      if (cache.size >= MAX_ACTION_LOGGERS) cache.clear();
      child = logger.child({ actionId });
      cache.set(actionId, child);
    }
    return child;
  };
}
