import type { DeliveryEvents } from '../delivery/delivery-events.js';
import { statusClass, type RelayMetrics } from './relay-metrics.js';

/** Bound on cached label children: action ids come from definitions, but never trust a count. */
const MAX_CACHED_ACTIONS = 10_000;

export interface DeliveryObserverOptions {
  /** The worker process's concurrency budget, exported beside the jobs in flight. @defaultValue 64 */
  concurrency?: number;
}

/**
 * Turns the delivery pipeline's events into the relay's metrics. The series every delivery moves
 * are looked up once per action (hot-series.ts), so a delivery costs no label hashing. The circuit
 * gauges are not fed from here: they are read from Redis at scrape time, so that they clear when
 * another worker closes a circuit. Returns a function that unsubscribes.
 */
export function observeDeliveryMetrics(events: DeliveryEvents, metrics: RelayMetrics, opts: DeliveryObserverOptions = {}): () => void {
  const inFlight = metrics.workerGauges(opts.concurrency ?? 64);
  const meters = new Map<string, ReturnType<typeof metersFor>>();
  const metersFor = (action: string) => ({
    httpDuration: metrics.httpDuration.labels({ action }),
    ok: metrics.httpRequests.tally({ action, status_class: '2xx' }),
    delivered: metrics.jobs.tally({ action, outcome: 'delivered' }),
    latency: metrics.deliveryLatency.labels({ action }),
  });
  const metersOf = (action: string) => {
    let m = meters.get(action);
    if (!m) {
      if (meters.size > MAX_CACHED_ACTIONS) meters.clear();
      m = metersFor(action);
      meters.set(action, m);
    }
    return m;
  };

  const off = [
    events.on('started', () => inFlight.inc()),
    events.on('settled', () => inFlight.dec()),
    // Every series of the action at 0 before its first outcome, so that increase() sees it.
    events.on('loaded', (e) => metrics.initAction(e.actionId)),
    events.on('sent', (e) => {
      const m = metersOf(e.actionId);
      m.httpDuration.observe(e.durationMs / 1000);
      if (e.status !== undefined) {
        if (e.status >= 200 && e.status < 300) m.ok.inc();
        else metrics.httpRequests.inc({ action: e.actionId, status_class: statusClass(e.status) });
      } else if (e.failure) {
        metrics.httpRequests.inc({ action: e.actionId, status_class: e.failure });
      }
    }),
    events.on('delivered', (e) => {
      const m = metersOf(e.actionId);
      m.delivered.inc();
      m.latency.observe(e.latencyMs / 1000);
    }),
    events.on('retried', (e) => metrics.retries.inc({ action: e.actionId, reason: e.reason })),
    events.on('dead', (e) => {
      metrics.jobs.inc({ action: e.actionId, outcome: 'dead' });
      metrics.deadLetters.inc({ action: e.actionId, reason: e.reason });
    }),
    events.on('deferred', (e) => {
      // Jobs also wait for an in-flight permit, a pause or an open circuit: only a rate-limit slot counts here.
      if (e.cause !== 'rate_limit') return;
      metrics.rateLimited.inc({ action: e.actionId });
      if (e.waitMs !== undefined) metrics.rateLimitWait.observe({ action: e.actionId }, Math.max(0, e.waitMs) / 1000);
    }),
  ];
  return () => off.forEach((f) => f());
}
