import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { DEAD_REASONS, type DeadReason } from '../errors/errors.js';
import { VERSION } from '../version.js';
import { SCRAPE_OPS, type CircuitStateName, type QueueState, type ScrapeSnapshot } from './scrape-reader.js';
import { HotHistogram, TalliedCounter } from './hot-series.js';

export type { QueueState } from './scrape-reader.js';

/** The metrics of docs/metrics-and-alerts.md, registered on a registry handed in. */
export interface RelayMetrics {
  registry: Registry;
  httpRequests: TalliedCounter<'action' | 'status_class'>;
  httpDuration: HotHistogram<'action'>;
  jobs: TalliedCounter<'action' | 'outcome'>;
  retries: Counter<'action' | 'reason'>;
  rateLimited: Counter<'action'>;
  rateLimitWait: Histogram<'action'>;
  /** From the time the job became ready (enqueue plus its delayMs) to delivered. */
  deliveryLatency: HotHistogram<'action'>;
  queueJobs: Gauge<'state'>;
  circuitState: Gauge<'key'>;
  /** Access-token requests sent, by the action that needed them and whether a token came back. */
  tokenRefreshes: Counter<'action' | 'outcome'>;
  /** Jobs dead-lettered, by action and reason (a bounded enum): shows capping, auth failures... */
  deadLetters: Counter<'action' | 'reason'>;
  /** How long the job next in line has been ready to run. */
  oldestWaiting: Gauge;
  /**
   * Registers a worker process's in-flight gauges (an API process has none): sets
   * action_relay_worker_concurrency and returns action_relay_in_flight_jobs, which the worker
   * moves as jobs start and end. Calling it again returns the same gauge.
   */
  workerGauges(concurrency: number): Gauge;
  /** Jobs offered to the API, by result (accepted, deduplicated, invalid, error). */
  enqueued: Counter<'result'>;
  /** Duration of one enqueue call (a batch is one call). */
  enqueueDuration: Histogram<'kind'>;
  /**
   * Creates every series of an action at 0 (jobs, dead letters by reason, requests by status
   * class, retries by reason), so that the first event moves `increase()`. Called when a worker
   * compiles the action; cheap to call again.
   */
  initAction(actionId: string): void;
}

/** Every `status_class` of action_relay_http_requests_total. */
export const STATUS_CLASSES = ['2xx', '3xx', '4xx', '5xx', 'timeout', 'network'] as const;

/** Every dead-letter reason, from the one list in errors.ts. */
export { DEAD_REASONS };
/** The reasons an attempt is retried for. */
export const RETRY_REASONS = ['http_status', 'timeout', 'network'] as const satisfies readonly DeadReason[];

export const ENQUEUE_RESULTS = ['accepted', 'deduplicated', 'invalid', 'error'] as const;
export type EnqueueResultLabel = (typeof ENQUEUE_RESULTS)[number];

const CIRCUIT_STATES: readonly CircuitStateName[] = ['closed', 'open', 'half_open'];
const CIRCUIT_VALUE: Record<CircuitStateName, number> = { closed: 0, open: 1, half_open: 2 };

/**
 * Latency buckets from 5 ms to 24 h: a throttled job may wait up to rateLimit.maxWaitMs (6 h by
 * default), and the latency SLO reads the 300 s bucket.
 */
export const LATENCY_BUCKETS = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400,
];

export function statusClass(status: number): '2xx' | '3xx' | '4xx' | '5xx' {
  if (status < 300) return '2xx';
  if (status < 400) return '3xx';
  if (status < 500) return '4xx';
  return '5xx';
}

export interface RelayMetricsOptions {
  /** Register Node.js process metrics. @defaultValue true */
  defaults?: boolean;
  /** Reads Redis at scrape time (queue depth and age, results streams, circuits); see createScrapeReader. */
  scrape?: () => Promise<ScrapeSnapshot>;
  /** RESULTS_MAXLEN, exported so that alerts compare consumer lag with it. */
  resultsMaxLen?: number;
  /** Value of the `node` label of action_relay_build_info (the Node.js version). @defaultValue process.version */
  node?: string;
  /** @defaultValue the package version */
  version?: string;
}

export function createRelayMetrics(registry: Registry = new Registry(), opts: RelayMetricsOptions = {}): RelayMetrics {
  if (opts.defaults !== false) collectDefaultMetrics({ register: registry });
  const scrape = opts.scrape;
  const registers = [registry];

  new Gauge({
    name: 'action_relay_build_info',
    help: 'Always 1: the running version of action-relay and of Node.js',
    labelNames: ['version', 'node'],
    registers,
  }).set({ version: opts.version ?? VERSION, node: opts.node ?? process.version }, 1);

  // Scrape-time Redis readings. Each gauge is reset before it is set, so that a read that failed
  // drops its series (Prometheus marks them stale) instead of freezing the last value.
  if (scrape) registerScrapeGauges(registry, scrape, opts.resultsMaxLen);

  const httpRequests = new TalliedCounter({
    name: 'action_relay_http_requests_total',
    help: 'HTTP requests sent to third parties, by action and status class',
    labelNames: ['action', 'status_class'],
    registers,
  });
  const jobs = new TalliedCounter({
    name: 'action_relay_jobs_total',
    help: 'Jobs ended, by action and outcome',
    labelNames: ['action', 'outcome'],
    registers,
  });
  const retries = new Counter({
    name: 'action_relay_retries_total',
    help: 'Attempts that failed and were scheduled again, by action and reason',
    labelNames: ['action', 'reason'],
    registers,
  });
  const deadLetters = new Counter({
    name: 'action_relay_dead_letters_total',
    help: 'Jobs dead-lettered, by action and reason',
    labelNames: ['action', 'reason'],
    registers,
  });
  const initialised = new Set<string>();

  const queueJobs = new Gauge({
    name: 'action_relay_queue_jobs',
    help: 'Jobs per state (waiting, active, delayed, dlq) over every partition, read from Redis at scrape time',
    labelNames: ['state'],
    registers,
    async collect() {
      if (!scrape) return;
      const { partitions } = await scrape();
      this.reset();
      if (!partitions) return;
      const total: Record<QueueState, number> = { waiting: 0, active: 0, delayed: 0, dlq: 0 };
      for (const p of partitions) for (const s of Object.keys(total) as QueueState[]) total[s] += p.counts[s];
      for (const [state, n] of Object.entries(total)) this.set({ state }, n);
    },
  });
  const circuitState = new Gauge({
    name: 'action_relay_circuit_state',
    help: 'Circuit breaker state per rate-limit key: 0 closed, 1 open, 2 half-open (read from Redis at scrape time)',
    labelNames: ['key'],
    registers,
    async collect() {
      if (!scrape) return;
      const { limitKeys } = await scrape();
      this.reset();
      for (const k of limitKeys ?? []) if (k.circuit) this.set({ key: k.key }, CIRCUIT_VALUE[k.circuit]);
    },
  });
  const oldestWaiting = new Gauge({
    name: 'action_relay_oldest_waiting_seconds',
    help: 'Seconds the job next in line has been ready to run (0 when none waits), over every partition, read from Redis at scrape time',
    registers,
    async collect() {
      if (!scrape) return;
      const { oldestWaitingSeconds } = await scrape();
      unread = oldestWaitingSeconds === undefined;
      if (oldestWaitingSeconds) this.set(Math.max(0, ...oldestWaitingSeconds));
    },
  });
  // A gauge without labels always has a sample (reset() sets 0): dropped here when its read failed.
  let unread = false;
  const getOldest = oldestWaiting.get.bind(oldestWaiting);
  oldestWaiting.get = async () => {
    const m = await getOldest();
    return unread ? { ...m, values: [] } : m;
  };

  let worker: { inFlight: Gauge; concurrency: Gauge } | undefined;

  const enqueued = new Counter({
    name: 'action_relay_enqueue_total',
    help: 'Jobs offered to the enqueue API, by result (accepted, deduplicated, invalid, error)',
    labelNames: ['result'],
    registers,
  });
  for (const result of ENQUEUE_RESULTS) enqueued.inc({ result }, 0);

  return {
    registry,
    httpRequests,
    httpDuration: new HotHistogram({
      name: 'action_relay_http_request_duration_seconds',
      help: 'Duration of HTTP requests to third parties',
      labelNames: ['action'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120],
      registers,
    }),
    jobs,
    retries,
    rateLimited: new Counter({
      name: 'action_relay_rate_limited_total',
      help: 'Jobs deferred while waiting for a rate-limit slot',
      labelNames: ['action'],
      registers,
    }),
    rateLimitWait: new Histogram({
      name: 'action_relay_rate_limit_wait_seconds',
      help: 'Seconds a deferred job was set to wait for its rate-limit slot',
      labelNames: ['action'],
      buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600, 21600],
      registers,
    }),
    deliveryLatency: new HotHistogram({
      name: 'action_relay_delivery_latency_seconds',
      help: 'Time from when a job became ready (enqueue plus its delayMs) to delivered; rate-limit waits included (see action_relay_rate_limit_wait_seconds)',
      labelNames: ['action'],
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    queueJobs,
    circuitState,
    tokenRefreshes: new Counter({
      name: 'action_relay_token_refreshes_total',
      help: 'Access-token requests sent to token endpoints, by action and outcome (ok, error)',
      labelNames: ['action', 'outcome'],
      registers,
    }),
    deadLetters,
    oldestWaiting,
    workerGauges(concurrency) {
      worker ??= {
        inFlight: new Gauge({
          name: 'action_relay_in_flight_jobs',
          help: 'Jobs this worker process is delivering now (compare with action_relay_worker_concurrency)',
          registers,
        }),
        concurrency: new Gauge({
          name: 'action_relay_worker_concurrency',
          help: 'WORKER_CONCURRENCY of this worker process: the most jobs it delivers at once',
          registers,
        }),
      };
      worker.concurrency.set(concurrency);
      return worker.inFlight;
    },
    enqueued,
    enqueueDuration: new Histogram({
      name: 'action_relay_enqueue_duration_seconds',
      help: 'Duration of one enqueue call of the API or library (kind single or batch)',
      labelNames: ['kind'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
    initAction(action) {
      if (initialised.has(action)) return;
      if (initialised.size > 10_000) initialised.clear();
      initialised.add(action);
      for (const outcome of ['delivered', 'dead']) jobs.inc({ action, outcome }, 0);
      for (const reason of DEAD_REASONS) deadLetters.inc({ action, reason }, 0);
      for (const status_class of STATUS_CLASSES) httpRequests.inc({ action, status_class }, 0);
      for (const reason of RETRY_REASONS) retries.inc({ action, reason }, 0);
    },
  };
}

/** The gauges read from Redis at scrape time, beyond action_relay_queue_jobs and action_relay_oldest_waiting_seconds. */
function registerScrapeGauges(registry: Registry, scrape: () => Promise<ScrapeSnapshot>, resultsMaxLen: number | undefined): void {
  const registers = [registry];
  new Gauge({
    name: 'action_relay_redis_up',
    help: "1 when this process's scrape-time Redis reads answered within their deadline, 0 otherwise",
    registers,
    async collect() {
      this.set((await scrape()).redisUp ? 1 : 0);
    },
  });
  const errors = new Counter({
    name: 'action_relay_redis_errors_total',
    help: 'Scrape-time Redis reads that failed or timed out, by operation',
    labelNames: ['op'],
    registers,
    // Runs at scrape time too: this scrape's failures are counted before the counter is written.
    async collect() {
      for (const op of (await scrape()).failed) this.inc({ op });
    },
  });
  for (const op of SCRAPE_OPS) errors.inc({ op }, 0);

  new Gauge({
    name: 'action_relay_partition_jobs',
    help: 'Jobs per queue partition and state (waiting, active, delayed, dlq), read from Redis at scrape time',
    labelNames: ['partition', 'state'],
    registers,
    async collect() {
      const { partitions } = await scrape();
      this.reset();
      partitions?.forEach((p, i) => {
        for (const [state, n] of Object.entries(p.counts)) this.set({ partition: String(i), state }, n);
      });
    },
  });
  /** A gauge with one series per queue partition, its values taken from the scrape-time snapshot. */
  const perPartition = (name: string, help: string, values: (s: Awaited<ReturnType<typeof scrape>>) => number[] | undefined) =>
    new Gauge({
      name,
      help,
      labelNames: ['partition'],
      registers,
      async collect() {
        const list = values(await scrape());
        this.reset();
        list?.forEach((v, i) => this.set({ partition: String(i) }, v));
      },
    });
  perPartition(
    'action_relay_ordering_waiting_jobs',
    'Jobs with an orderingKey waiting behind an earlier job of their key, per queue partition (not yet in the queue, so not in action_relay_queue_jobs), read at scrape time',
    (s) => s.partitions?.map((p) => p.waitingInLine),
  );
  perPartition(
    'action_relay_partition_oldest_waiting_seconds',
    'Seconds the job next in line of each queue partition has been ready to run, read from Redis at scrape time',
    (s) => s.oldestWaitingSeconds,
  );
  perPartition('action_relay_results_stream_entries', 'Entries in the results stream of each partition (XLEN), read at scrape time', (s) =>
    s.results?.map((r) => r.length),
  );
  new Gauge({
    name: 'action_relay_results_consumer_lag',
    help: 'Results-stream entries a consumer group has not read yet, per partition and group (XINFO GROUPS lag), read at scrape time',
    labelNames: ['partition', 'group'],
    registers,
    async collect() {
      const { results } = await scrape();
      this.reset();
      results?.forEach((r, i) => {
        for (const g of r.groups) if (g.lag !== null) this.set({ partition: String(i), group: g.name }, g.lag);
      });
    },
  });
  if (resultsMaxLen !== undefined) {
    new Gauge({
      name: 'action_relay_results_stream_maxlen',
      help: 'RESULTS_MAXLEN: past about this many entries the oldest results are trimmed, read or not',
      registers,
    }).set(resultsMaxLen);
  }
  new Gauge({
    name: 'action_relay_circuit',
    help: 'Circuit breaker per rate-limit key, one series per state (closed, open, half_open): 1 for the current state, read from Redis at scrape time',
    labelNames: ['key', 'state'],
    registers,
    async collect() {
      const { limitKeys } = await scrape();
      this.reset();
      for (const k of limitKeys ?? []) {
        if (!k.circuit) continue;
        for (const state of CIRCUIT_STATES) this.set({ key: k.key, state }, k.circuit === state ? 1 : 0);
      }
    },
  });
  new Gauge({
    name: 'action_relay_rate_limit_reserved_slots',
    help: 'Deferred jobs holding a future slot of each rate-limit key (its backlog), read from Redis at scrape time',
    labelNames: ['key'],
    registers,
    async collect() {
      const { limitKeys } = await scrape();
      this.reset();
      for (const k of limitKeys ?? []) this.set({ key: k.key }, k.reservedSlots);
    },
  });
  new Gauge({
    name: 'action_relay_rate_limit_paused_seconds',
    help: "Seconds a third party's Retry-After still pauses each rate-limit key (0 when not paused), read from Redis at scrape time",
    labelNames: ['key'],
    registers,
    async collect() {
      const { limitKeys } = await scrape();
      this.reset();
      for (const k of limitKeys ?? []) this.set({ key: k.key }, k.pausedSeconds);
    },
  });
}

/** Runs an observability update so that it can never fail a job. */
export function safely(fn: () => void): void {
  try {
    fn();
  } catch {
    // Metrics must not break delivery.
  }
}
