import { DelayedError, Worker, type Job } from 'bullmq';
import type { Logger } from 'pino';
import type { ActionStore } from '../actions/action-store.js';
import type { BuiltRequest, CompiledAction } from '../actions/compile-action.js';
import type { RenderScope } from '../actions/template.js';
import {
  CappedError,
  HttpStatusError,
  InvalidParamsError,
  NetworkError,
  RelayError,
  ResponseInvalidError,
  UnknownActionError,
  ValidationError,
  coerceError,
} from '../errors/errors.js';
import { readJobData, type JobData, type JobOutcome } from '../queue/job-schema.js';
import type { AttemptRecord, OutcomeWriter } from '../queue/outcome-writer.js';
import { BACKOFF_TYPE, FRESH_PRIORITY } from '../queue/delivery-queue.js';
import { luaScript } from '../redis/lua-script.js';
import type { PartitionKeys, RedisClient, RelayKeys } from '../redis/redis-connection.js';
import { safely, statusClass, type RelayMetrics } from '../metrics/relay-metrics.js';
import { maskHeaders, maskPath, type AuthApplied } from './auth.js';
import { prepareRequest } from './prepare-request.js';
import type { HttpSender, SentResponse } from './http-sender.js';
import { RETRY_AFTER_STATUSES, isRetryableStatus, nextAttemptDelay, parseRetryAfter } from './retry-policy.js';
import type { SecretResolver } from './secret-resolver.js';
import type { TokenProvider } from './token-provider.js';
import type { CircuitBreaker, CircuitConfig } from './circuit-breaker.js';
import { DELAYED_WAKE_EARLY_MS, IN_PROCESS_WAIT_MS, LATE_TOLERANCE_MS, type RateLimiter } from './rate-limiter.js';
import { createSharedConcurrency } from './shared-concurrency.js';

/** Bytes of a response body kept in an attempt record. */
export const RECORD_BODY_BYTES = 4096;
const DEFAULT_MAX_ATTEMPTS = 4;
/** Sets the priority BullMQ reads when it promotes the job; KEYS[1] job hash, ARGV[1] priority. No-op on a job gone. */
const SET_PRIORITY = luaScript(`if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'priority', ARGV[1]) end return 0`);
/** How long a worker trusts what it last read of a key's back-pressure pause (no rateLimit). */
const PAUSE_RECHECK_MS = 250;
/** How often a job waiting for an in-flight permit asks again. */
const PERMIT_POLL_MS = 20;

/** Thrown to BullMQ when an attempt failed and another is due after `delayMs`. */
export class RetryScheduled extends Error {
  constructor(
    readonly error: RelayError,
    readonly delayMs: number,
  ) {
    super(error.message);
  }
}

export interface DeliveryWorkerDeps {
  /** A connection with maxRetriesPerRequest: null (BullMQ duplicates it for blocking calls). */
  connection: RedisClient;
  keys: RelayKeys;
  store: ActionStore;
  sender: HttpSender;
  secrets: SecretResolver;
  /** Access tokens of oauth2ClientCredentials and customToken actions. */
  tokens?: TokenProvider;
  outcomes: OutcomeWriter;
  /** Per-key rate limits; without it, rateLimit settings are not enforced. */
  rateLimiter?: RateLimiter;
  /** Per-key circuit breakers; without it, circuitBreaker settings are not enforced. */
  circuitBreaker?: CircuitBreaker;
  metrics: RelayMetrics;
  logger: Logger;
  /** Jobs in flight in this process, shared by the partitions' workers (see createSharedConcurrency). @defaultValue 64 */
  concurrency?: number;
  /** Most bytes of a 2xx body read to capture response fields. @defaultValue 1 MiB */
  maxResponseBytes?: number;
  /** Milliseconds a job's lock lasts without renewal (renewed every half). @defaultValue 130000 */
  lockDurationMs?: number;
  /** Longest request; an action's timeoutMs is clamped to it. @defaultValue 120000 */
  requestTimeoutCapMs?: number;
  now?: () => number;
  random?: () => number;
  autorun?: boolean;
}

export interface DeliveryWorker {
  /** Partition 0's worker: the only one when QUEUE_PARTITIONS is 1. */
  worker: Worker;
  /** One BullMQ worker per partition (keys.partitions), in partition order. */
  workers: Worker[];
  /** Stops taking jobs and waits for the ones in flight; `force` leaves them to be taken over. */
  close(force?: boolean): Promise<void>;
}

/** Response headers as a record keeps them: any secret value echoed back is masked. */
function headerRecord(headers: SentResponse['headers'], redact: (s: string) => string): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(headers)) out[k] = Array.isArray(v) ? v.map(redact) : redact(v);
  return out;
}

/** Creates the BullMQ worker that delivers jobs; see `processJob` for the decision of each attempt. */
export function createDeliveryWorker(deps: DeliveryWorkerDeps): DeliveryWorker {
  const now = deps.now ?? Date.now;
  const random = deps.random ?? Math.random;
  const maxResponseBytes = deps.maxResponseBytes ?? 1024 * 1024;
  const { metrics, secrets, outcomes } = deps;
  const lockDuration = deps.lockDurationMs ?? 130_000;
  const timeoutCap = deps.requestTimeoutCapMs ?? 120_000;
  if (lockDuration <= timeoutCap) {
    throw new Error(`lock duration ${lockDuration} ms must exceed the request timeout cap ${timeoutCap} ms`);
  }

  const redactText = (s: string) => secrets.redact(s);
  /** Labelled metric children per action for the delivered path: no label hashing per job. */
  const meters = new Map<string, ReturnType<typeof metersFor>>();
  const metersFor = (action: string) => ({
    httpDuration: metrics.httpDuration.labels({ action }),
    ok: metrics.httpRequests.labels({ action, status_class: '2xx' }),
    delivered: metrics.jobs.labels({ action, outcome: 'delivered' }),
    latency: metrics.deliveryLatency.labels({ action }),
  });
  const metersOf = (action: string) => {
    let m = meters.get(action);
    if (!m) {
      if (meters.size > 10_000) meters.clear();
      m = metersFor(action);
      meters.set(action, m);
    }
    return m;
  };
  /** Back-pressure pauses per rate-limit key as last read, for actions without a rateLimit. */
  const pauses = new Map<string, { until: number; checkedAt: number }>();

  async function processJob(job: Job, partition: PartitionKeys, token?: string): Promise<JobOutcome> {
    const jobId = job.id as string;
    const attempt = job.attemptsMade + 1;
    const startedAt = now();
    // A child logger costs a bindings serialization: made only when a line other than the
    // delivered one is written.
    let child: Logger | undefined;
    const log = () => (child ??= deps.logger.child({ jobId, actionId: job.name, attempt }));
    let action: CompiledAction | null = null;
    let data: JobData | undefined;
    let req: BuiltRequest | undefined;
    let applied: AuthApplied = { secretHeaders: [], secretQuery: [] };
    let res: SentResponse | undefined;
    let sent = false;
    let sendError: unknown;
    let probe = false;
    const label = () => (action ? action.id : 'unknown');

    try {
      const parsed = readJobData(job.data);
      if (!parsed.ok) throw new InvalidParamsError([{ path: parsed.path, message: 'malformed job data' }]);
      data = parsed.value;
      try {
        action = await deps.store.getCompiled(job.name);
      } catch (err: unknown) {
        if (err instanceof ValidationError) throw new UnknownActionError(`${job.name} (stored definition is invalid: ${err.message})`);
        throw err;
      }
      if (!action) throw new UnknownActionError(job.name);
      const checked = action.validateParams(data.params);
      if (!checked.ok) throw new InvalidParamsError(checked.problems);
      const scope: RenderScope = {
        params: checked.value,
        context: data.context,
        job: { id: jobId, attempt, idempotencyKey: data.idempotencyKey ?? jobId },
      };

      const breaker = action.definition.circuitBreaker && deps.circuitBreaker ? deps.circuitBreaker : undefined;
      if (breaker) probe = await checkCircuit(action, breaker, job, token);
      if (action.definition.rateLimit && deps.rateLimiter) await awaitSlot(action, deps.rateLimiter, job, token, startedAt);
      else if (deps.rateLimiter) await awaitPause(action, deps.rateLimiter, job, token, startedAt);
      // Rendered once the job may go: a deferred job costs no token lookup or signature, and a
      // signature's timestamp is the sending time.
      const prepareOpts = { secrets, tokens: deps.tokens, now };
      let prepared = await prepareRequest(action, scope, prepareOpts);
      ({ req, applied } = prepared);

      const timeoutMs = Math.min(action.definition.endpoint.timeoutMs, timeoutCap);
      const maxConcurrent = action.definition.rateLimit?.maxConcurrent;
      if (maxConcurrent && deps.rateLimiter) await awaitPermit(action, deps.rateLimiter, maxConcurrent, job, token, timeoutMs, startedAt);
      const sendStart = now();
      sent = true;
      const captures = action.capturesResponse || action.capturesErrorResponse;
      const sendOpts = { timeoutMs, readLimit: captures ? maxResponseBytes : RECORD_BODY_BYTES };
      try {
        res = await deps.sender.send(req, { ...sendOpts, ...(prepared.tls ? { tls: prepared.tls } : {}) });
        if (res.status === 401 && applied.token !== undefined) {
          // The token may have been revoked or expired early: one fresh token, one more request,
          // before this attempt counts as failed.
          log().debug({ status: 401 }, 'access token refused, fetching a new one');
          safely(() => metrics.httpRequests.inc({ action: action?.id ?? 'unknown', status_class: '4xx' }));
          prepared = await prepareRequest(action, scope, { ...prepareOpts, rejectedToken: applied.token });
          ({ req, applied } = prepared);
          res = await deps.sender.send(req, { ...sendOpts, ...(prepared.tls ? { tls: prepared.tls } : {}) });
        }
      } catch (err: unknown) {
        sendError = err;
        throw err;
      } finally {
        const cfg = action.definition.circuitBreaker;
        // A refused destination (egress policy) says nothing of the third party's health.
        const ours = !res && sendError instanceof RelayError && !sendError.retryable;
        if (cfg && deps.circuitBreaker && !ours) {
          // The third party's health: 5xx, 429 and no answer count as failures, other 4xx do not.
          const failed = !res || res.status >= 500 || res.status === 429;
          await recordCircuit(action, deps.circuitBreaker, cfg, failed, probe, log);
        }
        if (maxConcurrent && deps.rateLimiter) {
          const limiter = deps.rateLimiter;
          await limiter
            .release(action.limitKey, jobId)
            .catch((e: unknown) => log().warn({ err: coerceError(e).message }, 'permit release failed'));
        }
        const seconds = (now() - sendStart) / 1000;
        const a = action.id;
        safely(() => metersOf(a).httpDuration.observe(seconds));
      }
      const status = res.status;
      safely(() =>
        status < 300 && status >= 200
          ? metersOf(label()).ok.inc()
          : metrics.httpRequests.inc({ action: label(), status_class: statusClass(status) }),
      );

      if (status < 200 || status >= 300) {
        const retryAfter = RETRY_AFTER_STATUSES.has(status) ? parseRetryAfter(res.headers['retry-after'], now()) : undefined;
        throw new HttpStatusError(status, isRetryableStatus(status, action.definition.retry.retryOn), retryAfter);
      }
      let response: Record<string, unknown> = {};
      if (action.capturesResponse) {
        if (res.truncated) throw new ResponseInvalidError(`response body exceeds ${maxResponseBytes} bytes`, status);
        let body: unknown;
        try {
          body = JSON.parse(res.body.toString('utf8'));
        } catch {
          throw new ResponseInvalidError('response body is not valid JSON', status);
        }
        response = action.captureResponse(body, status);
      }
      const end = now();
      await outcomes.finish(partition, {
        jobId,
        actionId: job.name,
        outcome: 'delivered',
        status,
        reason: '',
        attempts: attempt,
        durationMs: end - job.timestamp,
        context: data.context,
        response,
        ...(data.orderingKey !== undefined ? { orderingKey: data.orderingKey } : {}),
      });
      safely(() => {
        const m = metersOf(label());
        m.delivered.inc();
        m.latency.observe((end - job.timestamp) / 1000);
      });
      deps.logger.info({ jobId, actionId: job.name, attempt, status, durationMs: end - startedAt, outcome: 'delivered' }, 'delivered');
      return { outcome: 'delivered', status, reason: null, attempts: attempt, response };
    } catch (caught: unknown) {
      if (caught instanceof DelayedError) throw caught;
      const err = toRelayError(caught, log);
      if (sent && !res && (err.reason === 'timeout' || err.reason === 'network')) {
        safely(() => metrics.httpRequests.inc({ action: label(), status_class: err.reason }));
      }
      const record = attemptRecord(attempt, startedAt, action, req, applied, res, err);
      const maxAttempts = action?.definition.retry.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
      const status = err instanceof HttpStatusError || err instanceof ResponseInvalidError ? err.status : null;
      const durationMs = now() - startedAt;

      if (err instanceof HttpStatusError && err.retryAfterMs !== undefined && action && deps.rateLimiter) {
        const key = action.limitKey;
        // A daily-quota Retry-After (or a hostile one) must not park or cap the whole key for a day.
        const until = now() + Math.min(err.retryAfterMs, action.definition.retry.backoff.maxDelayMs);
        // Every worker sees the pause: through the limiter's script for actions with a rateLimit,
        // through awaitPause (cached briefly) for the others.
        pauses.set(key, { until, checkedAt: now() });
        await deps.rateLimiter
          .pushBack(key, until, now())
          .catch((e: unknown) => log().warn({ err: coerceError(e).message }, 'rate-limit push-back failed'));
      }

      if (err.retryable && attempt < maxAttempts) {
        const backoff = action?.definition.retry.backoff ?? { type: 'exponential' as const, delayMs: 1000, maxDelayMs: 300_000 };
        const retryAfterMs = err instanceof HttpStatusError ? err.retryAfterMs : undefined;
        const delayMs = nextAttemptDelay(attempt, backoff, retryAfterMs, random);
        await outcomes.recordAttempt(partition, jobId, record);
        safely(() => metrics.retries.inc({ action: label(), reason: err.reason }));
        log().info(
          { status, durationMs, reason: err.reason, err: record.error?.message, retryInMs: delayMs },
          `attempt ${attempt} of ${maxAttempts} failed, retrying`,
        );
        throw new RetryScheduled(err, delayMs);
      }

      const history = [...(await outcomes.attemptsOf(partition, jobId, attempt - 1)), record];
      const failedAt = new Date(now()).toISOString();
      const context = data?.context ?? {};
      const errorResponse = res && action ? captureErrorResponse(action, res) : {};
      await outcomes.finish(partition, {
        jobId,
        actionId: job.name,
        outcome: 'dead',
        status,
        reason: err.reason,
        attempts: attempt,
        durationMs: now() - job.timestamp,
        context,
        response: {},
        errorResponse,
        ...(data?.orderingKey !== undefined ? { orderingKey: data.orderingKey } : {}),
        dead: {
          jobId,
          actionId: job.name,
          job: {
            actionId: job.name,
            params: data?.params ?? {},
            context,
            ...(data?.idempotencyKey !== undefined ? { idempotencyKey: data.idempotencyKey } : {}),
            ...(data?.replayOf !== undefined ? { replayOf: data.replayOf } : {}),
            ...(data?.orderingKey !== undefined ? { orderingKey: data.orderingKey } : {}),
            enqueuedAt: new Date(job.timestamp).toISOString(),
          },
          reason: err.reason,
          status,
          failedAt,
          errorResponse,
          attempts: history,
        },
      });
      safely(() => metrics.jobs.inc({ action: label(), outcome: 'dead' }));
      safely(() => metrics.deadLetters.inc({ action: label(), reason: err.reason }));
      log().info(
        { status, durationMs, reason: err.reason, err: record.error?.message, outcome: 'dead' },
        `attempt ${attempt} of ${maxAttempts} failed, dead-lettered`,
      );
      return {
        outcome: 'dead',
        status,
        reason: err.reason,
        attempts: attempt,
        errorResponse,
        error: record.error?.message ?? `HTTP ${status}`,
      };
    }
  }

  /**
   * Returns when this job may send under its key's rate limit. A near slot is waited for here;
   * a far one (or a pause asked by the third party) defers the job with DelayedError, using no attempt.
   */
  async function awaitSlot(
    action: CompiledAction,
    limiter: RateLimiter,
    job: Job,
    token: string | undefined,
    startedAt: number,
  ): Promise<void> {
    const limit = action.definition.rateLimit;
    if (!limit) return;
    const spec = { key: action.limitKey, max: limit.max, perMs: limit.perMs, maxWaitMs: limit.maxWaitMs };
    let deferTo = 0;
    let reserved = false;
    // A wait that wakes late (a busy event loop) takes a new slot rather than bunching with later ones.
    for (let tries = 0; tries < 3 && deferTo === 0; tries++) {
      const decision = await limiter.acquire(spec, job.id as string, now());
      if (decision.kind === 'go') return;
      if (decision.kind === 'capped') throw new CappedError(decision.waitMs, limit.maxWaitMs);
      if (decision.waitMs > IN_PROCESS_WAIT_MS) {
        deferTo = decision.at - DELAYED_WAKE_EARLY_MS;
        reserved = true;
        break;
      }
      await new Promise((r) => setTimeout(r, decision.waitMs));
      // Lateness is the timer's: measured before the pause lookup's round trip.
      const late = now() - decision.at;
      const pausedUntil = await limiter.pausedUntil(action.limitKey);
      if (pausedUntil > now()) deferTo = pausedUntil;
      else if (late <= LATE_TOLERANCE_MS) return;
    }
    if (deferTo === 0) deferTo = now();
    const a = action.id;
    safely(() => {
      metrics.rateLimited.inc({ action: a });
      metrics.rateLimitWait.observe({ action: a }, Math.max(0, deferTo - startedAt) / 1000);
    });
    await defer(job, deferTo, token, reserved ? 'due' : 'own');
    throw new DelayedError();
  }

  /**
   * Sends a job to the delayed set until `until`, using no attempt. Lane `due` is for a job that
   * holds a reserved rate-limit slot: BullMQ serves its plain wait list (priority 0) before
   * prioritized jobs, and fresh jobs are enqueued with FRESH_PRIORITY, so the job comes back
   * ahead of a backlog (100,000 jobs for one key would otherwise hold it past its slot). Every
   * other deferral (a permit, an open circuit, a pause) keeps the job's own priority: put in the
   * due lane, jobs that keep coming back would starve the fresh jobs of every other key.
   */
  async function defer(job: Job, until: number, token: string | undefined, lane: 'due' | 'own'): Promise<void> {
    const priority = lane === 'due' ? 0 : (job.opts.priority ?? FRESH_PRIORITY);
    await SET_PRIORITY.run(deps.connection, 1, `${job.queueQualifiedName}:${job.id as string}`, String(priority));
    await job.moveToDelayed(until, token);
  }

  /**
   * For an action without a rateLimit: defers the job, using no attempt, while the third party's
   * Retry-After pauses its key. The pause is read from Redis at most every PAUSE_RECHECK_MS per
   * key and process, so an unlimited action costs no Redis call per job.
   */
  async function awaitPause(action: CompiledAction, limiter: RateLimiter, job: Job, token: string | undefined, startedAt: number) {
    const key = action.limitKey;
    const t = now();
    let known = pauses.get(key);
    if (!known || t - known.checkedAt > PAUSE_RECHECK_MS) {
      known = { until: await limiter.pausedUntil(key), checkedAt: t };
      if (pauses.size > 10_000) pauses.clear();
      pauses.set(key, known);
    }
    if (known.until <= t) return;
    const deferTo = known.until;
    const a = action.id;
    safely(() => {
      metrics.rateLimited.inc({ action: a });
      metrics.rateLimitWait.observe({ action: a }, Math.max(0, deferTo - startedAt) / 1000);
    });
    await defer(job, deferTo, token, 'own');
    throw new DelayedError();
  }

  /**
   * Takes one of the key's in-flight permits: polled for up to a second (permits free up as
   * requests end), then the job is deferred briefly, using no attempt.
   */
  async function awaitPermit(
    action: CompiledAction,
    limiter: RateLimiter,
    max: number,
    job: Job,
    token: string | undefined,
    timeoutMs: number,
    startedAt: number,
  ): Promise<void> {
    // The lease outlives the request (connect + headers + body), so only a crash lets it lapse.
    const leaseMs = timeoutMs * 3 + 5000;
    for (let waited = 0; waited < IN_PROCESS_WAIT_MS; waited += PERMIT_POLL_MS) {
      if (await limiter.lease(action.limitKey, max, job.id as string, now(), leaseMs)) return;
      await new Promise((r) => setTimeout(r, PERMIT_POLL_MS));
    }
    const a = action.id;
    safely(() => metrics.rateLimited.inc({ action: a }));
    const deferTo = now() + 250;
    safely(() => metrics.rateLimitWait.observe({ action: a }, (deferTo - startedAt) / 1000));
    await defer(job, deferTo, token, 'own');
    throw new DelayedError();
  }

  /** Defers the job while its key's circuit is open; returns true when this attempt is the half-open probe. */
  async function checkCircuit(action: CompiledAction, breaker: CircuitBreaker, job: Job, token: string | undefined): Promise<boolean> {
    const key = action.limitKey;
    const d = await breaker.check(key, now(), Math.min(action.definition.endpoint.timeoutMs, timeoutCap) + 5000);
    if (d.kind === 'closed') {
      // Another worker may have closed it: this process's gauge must not stay at open.
      safely(() => metrics.circuitState.set({ key }, 0));
      return false;
    }
    if (d.kind === 'probe') {
      safely(() => metrics.circuitState.set({ key }, 2));
      return true;
    }
    safely(() => {
      metrics.circuitState.set({ key }, d.state === 'open' ? 1 : 2);
      metrics.rateLimited.inc({ action: action.id });
    });
    await defer(job, d.until, token, 'own');
    throw new DelayedError();
  }

  async function recordCircuit(
    action: CompiledAction,
    breaker: CircuitBreaker,
    cfg: CircuitConfig,
    failed: boolean,
    probe: boolean,
    log: () => Logger,
  ) {
    const key = action.limitKey;
    try {
      const t = await breaker.record(key, failed, probe, now(), cfg);
      if (t === 'opened' || (probe && failed)) {
        safely(() => metrics.circuitState.set({ key }, 1));
        // Logged by the one request that opened it, not per deferred job.
        if (t === 'opened') log().warn({ key, openMs: cfg.openMs }, 'circuit opened');
      } else if (t === 'closed') {
        safely(() => metrics.circuitState.set({ key }, 0));
        log().info({ key }, 'circuit closed');
      }
    } catch (err: unknown) {
      log().warn({ err: coerceError(err).message }, 'circuit record failed');
    }
  }

  /** The errorResponse fields of a non-2xx JSON answer; anything else (a 2xx, a body cut short or not JSON) gives none. */
  function captureErrorResponse(action: CompiledAction, res: SentResponse): Record<string, unknown> {
    if (!action.capturesErrorResponse || (res.status >= 200 && res.status < 300) || res.truncated) return {};
    try {
      return action.captureErrorResponse(JSON.parse(res.body.toString('utf8')));
    } catch {
      return {};
    }
  }

  function toRelayError(caught: unknown, log: () => Logger): RelayError {
    if (caught instanceof RelayError) return caught;
    const e = coerceError(caught);
    // A fault of our own must not drop the job: retry it, and say so loudly.
    log().error({ err: redactText(e.message) }, 'unexpected error while delivering');
    return new NetworkError('EINTERNAL', e.message);
  }

  function attemptRecord(
    attempt: number,
    startedAt: number,
    action: CompiledAction | null,
    req: BuiltRequest | undefined,
    applied: AuthApplied,
    res: SentResponse | undefined,
    err: RelayError,
  ): AttemptRecord {
    const method = req?.method ?? action?.definition.endpoint.method ?? '';
    const url = req ? req.origin + maskPath(req.path, applied) : (action?.definition.endpoint.url ?? '');
    const record: AttemptRecord = {
      attempt,
      startedAt: new Date(startedAt).toISOString(),
      durationMs: now() - startedAt,
      request: { method, url: redactText(url), headers: req ? maskHeaders(req.headers, applied) : {} },
    };
    if (res) {
      record.response = {
        status: res.status,
        headers: headerRecord(res.headers, redactText),
        body: redactText(res.body.subarray(0, RECORD_BODY_BYTES).toString('utf8')),
      };
    }
    if (!(err instanceof HttpStatusError)) record.error = { code: err.code, message: redactText(err.message) };
    return record;
  }

  // One worker per partition in this process; with several, they share the concurrency budget.
  const budget = deps.concurrency ?? 64;
  const partitions = deps.keys.partitions;
  const shared = partitions.length > 1 ? createSharedConcurrency(budget, partitions.length) : undefined;
  const workers = partitions.map((partition) => {
    const processor = (job: Job, token?: string) => processJob(job, partition, token);
    const worker = new Worker(partition.queueName, shared ? shared.track(partition.index, processor) : processor, {
      connection: deps.connection,
      prefix: partition.bullPrefix,
      concurrency: shared ? shared.initial(partition.index) : budget,
      autorun: deps.autorun ?? true,
      lockDuration: lockDuration,
      // A killed worker's jobs are found within lockDuration + stalledInterval.
      stalledInterval: Math.min(30_000, Math.max(1000, Math.floor(lockDuration / 2))),
      maxStalledCount: 10,
      settings: {
        backoffStrategy: (_attemptsMade: number, type?: string, err?: Error) =>
          type === BACKOFF_TYPE && err instanceof RetryScheduled ? err.delayMs : 1000,
      },
    });
    shared?.attach(partition.index, worker);
    worker.on('error', (err: unknown) => deps.logger.error({ err: redactText(coerceError(err).message) }, 'worker error'));
    return worker;
  });

  return {
    worker: workers[0] as Worker,
    workers,
    close: async (force) => {
      await Promise.all(workers.map((w) => w.close(force)));
    },
  };
}
