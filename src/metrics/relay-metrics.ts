import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The metrics of docs/metrics-and-alerts.md, registered on a registry handed in. */
export interface RelayMetrics {
  registry: Registry;
  httpRequests: Counter<'action' | 'status_class'>;
  httpDuration: Histogram<'action'>;
  jobs: Counter<'action' | 'outcome'>;
  retries: Counter<'action' | 'reason'>;
  rateLimited: Counter<'action'>;
  rateLimitWait: Histogram<'action'>;
  deliveryLatency: Histogram<'action'>;
  queueJobs: Gauge<'state'>;
  circuitState: Gauge<'key'>;
  /** Access-token requests sent, by the action that needed them and whether a token came back. */
  tokenRefreshes: Counter<'action' | 'outcome'>;
  /** Jobs dead-lettered, by action and reason (a bounded enum): shows capping, auth failures... */
  deadLetters: Counter<'action' | 'reason'>;
  /** How long the job next in line has been ready to run. */
  oldestWaiting: Gauge;
}

export function statusClass(status: number): '2xx' | '3xx' | '4xx' | '5xx' {
  if (status < 300) return '2xx';
  if (status < 400) return '3xx';
  if (status < 500) return '4xx';
  return '5xx';
}

export type QueueState = 'waiting' | 'active' | 'delayed' | 'dlq';

export interface RelayMetricsOptions {
  /** Register Node.js process metrics. @defaultValue true */
  defaults?: boolean;
  /** Reads the queue counts at scrape time (a few O(1) Redis calls). */
  queueCounts?: () => Promise<Record<QueueState, number>>;
  /** Reads the age in seconds of the job next in line at scrape time (O(1) Redis calls). */
  oldestWaitingSeconds?: () => Promise<number>;
}

export function createRelayMetrics(registry: Registry = new Registry(), opts: RelayMetricsOptions = {}): RelayMetrics {
  const queueCounts = opts.queueCounts;
  const oldestWaitingSeconds = opts.oldestWaitingSeconds;
  if (opts.defaults !== false) collectDefaultMetrics({ register: registry });
  return {
    registry,
    httpRequests: new Counter({
      name: 'action_relay_http_requests_total',
      help: 'HTTP requests sent to third parties, by action and status class',
      labelNames: ['action', 'status_class'],
      registers: [registry],
    }),
    httpDuration: new Histogram({
      name: 'action_relay_http_request_duration_seconds',
      help: 'Duration of HTTP requests to third parties',
      labelNames: ['action'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120],
      registers: [registry],
    }),
    jobs: new Counter({
      name: 'action_relay_jobs_total',
      help: 'Jobs ended, by action and outcome',
      labelNames: ['action', 'outcome'],
      registers: [registry],
    }),
    retries: new Counter({
      name: 'action_relay_retries_total',
      help: 'Attempts that failed and were scheduled again, by action and reason',
      labelNames: ['action', 'reason'],
      registers: [registry],
    }),
    rateLimited: new Counter({
      name: 'action_relay_rate_limited_total',
      help: 'Jobs deferred while waiting for a rate-limit slot',
      labelNames: ['action'],
      registers: [registry],
    }),
    rateLimitWait: new Histogram({
      name: 'action_relay_rate_limit_wait_seconds',
      help: 'Seconds a deferred job was set to wait for its rate-limit slot',
      labelNames: ['action'],
      buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600, 21600],
      registers: [registry],
    }),
    deliveryLatency: new Histogram({
      name: 'action_relay_delivery_latency_seconds',
      help: 'Time from enqueue to delivered',
      labelNames: ['action'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600],
      registers: [registry],
    }),
    queueJobs: new Gauge({
      name: 'action_relay_queue_jobs',
      help: 'Jobs per state (waiting, active, delayed, dlq), read from Redis at scrape time',
      labelNames: ['state'],
      registers: [registry],
      async collect() {
        if (!queueCounts) return;
        try {
          const counts = await queueCounts();
          for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
        } catch {
          // Redis down: keep the last values rather than fail the scrape.
        }
      },
    }),
    circuitState: new Gauge({
      name: 'action_relay_circuit_state',
      help: 'Circuit breaker state per rate-limit key: 0 closed, 1 open, 2 half-open',
      labelNames: ['key'],
      registers: [registry],
    }),
    tokenRefreshes: new Counter({
      name: 'action_relay_token_refreshes_total',
      help: 'Access-token requests sent to token endpoints, by action and outcome (ok, error)',
      labelNames: ['action', 'outcome'],
      registers: [registry],
    }),
    deadLetters: new Counter({
      name: 'action_relay_dead_letters_total',
      help: 'Jobs dead-lettered, by action and reason',
      labelNames: ['action', 'reason'],
      registers: [registry],
    }),
    oldestWaiting: new Gauge({
      name: 'action_relay_oldest_waiting_seconds',
      help: 'Seconds the job next in line has been ready to run (0 when none waits), read from Redis at scrape time',
      registers: [registry],
      async collect() {
        if (!oldestWaitingSeconds) return;
        try {
          this.set(await oldestWaitingSeconds());
        } catch {
          // Redis down: keep the last value rather than fail the scrape.
        }
      },
    }),
  };
}

/** Runs an observability update so that it can never fail a job. */
export function safely(fn: () => void): void {
  try {
    fn();
  } catch {
    // Metrics must not break delivery.
  }
}
