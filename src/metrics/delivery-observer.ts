import type { DeliveryEvents } from '../delivery/delivery-events.js';
import { statusClass, type RelayMetrics } from './relay-metrics.js';

const CIRCUIT_GAUGE = { closed: 0, open: 1, 'half-open': 2 } as const;
/** Bound on cached label children: action ids come from definitions, but never trust a count. */
const MAX_CACHED_ACTIONS = 10_000;

/**
 * Turns the delivery pipeline's events into the relay's metrics. Labelled children of the
 * per-delivery series are cached per action, so a delivery costs no label hashing.
 * Returns a function that unsubscribes.
 */
export function observeDeliveryMetrics(events: DeliveryEvents, metrics: RelayMetrics): () => void {
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
      if (meters.size > MAX_CACHED_ACTIONS) meters.clear();
      m = metersFor(action);
      meters.set(action, m);
    }
    return m;
  };

  const off = [
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
      metrics.rateLimited.inc({ action: e.actionId });
      if (e.waitMs !== undefined) metrics.rateLimitWait.observe({ action: e.actionId }, Math.max(0, e.waitMs) / 1000);
    }),
    events.on('circuit', (e) => metrics.circuitState.set({ key: e.key }, CIRCUIT_GAUGE[e.state])),
  ];
  return () => off.forEach((f) => f());
}
