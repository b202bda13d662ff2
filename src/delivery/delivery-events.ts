import type { DeadReason } from '../errors/errors.js';

/**
 * What the delivery pipeline tells observers (metrics, logs, tracing). Payloads are plain data
 * made for the event; a listener must not keep a reference to anything it did not copy.
 */
export interface DeliveryEventMap {
  /** A job was taken and its attempt begins; `settled` follows whatever happens (jobs in flight). */
  started: { jobId: string };
  /** The attempt of `started` is over (ended, retried, deferred or failed). */
  settled: { jobId: string };
  /** The job's action was found and compiled: its metric series start at 0 from here. */
  loaded: { actionId: string; jobId: string };
  /** A job was sent back to the delayed set without using an attempt (rate slot, permit, pause, open circuit). */
  deferred: { actionId: string; jobId: string; cause: 'rate_limit' | 'permit' | 'pause' | 'circuit'; until: number; waitMs?: number };
  /**
   * One HTTP request ended: with a status, or with a transport failure (`failure`), or refused
   * before it left (neither).
   */
  sent: { actionId: string; jobId: string; durationMs: number; status?: number; failure?: 'timeout' | 'network' };
  /** A job ended delivered; `latencyMs` runs from when it became ready (enqueue plus its delayMs) to now. */
  delivered: { actionId: string; jobId: string; status: number; attempt: number; latencyMs: number };
  /** An attempt failed and another is scheduled. */
  retried: { actionId: string; jobId: string; reason: DeadReason; attempt: number; delayMs: number };
  /** A job ended in the dead-letter queue. */
  dead: { actionId: string; jobId: string; reason: DeadReason; status: number | null; attempt: number };
  /** What this process last learned of a key's circuit. */
  circuit: { key: string; state: 'closed' | 'open' | 'half-open' };
}

export type DeliveryEventName = keyof DeliveryEventMap;
export type DeliveryListener<K extends DeliveryEventName> = (event: DeliveryEventMap[K]) => void;

/** A typed, synchronous emitter: listeners run in order, and one that throws never reaches the job. */
export interface DeliveryEvents {
  on<K extends DeliveryEventName>(name: K, listener: DeliveryListener<K>): () => void;
  emit<K extends DeliveryEventName>(name: K, event: DeliveryEventMap[K]): void;
  /** Whether anything listens to `name`: lets the pipeline skip building a payload nobody reads. */
  has(name: DeliveryEventName): boolean;
}

/**
 * Creates the emitter. The fence is here, once: a listener that throws is reported to
 * `onListenerError` (itself fenced) and the next listener still runs.
 */
export function createDeliveryEvents(onListenerError?: (err: unknown, name: DeliveryEventName) => void): DeliveryEvents {
  const listeners = new Map<DeliveryEventName, ((event: never) => void)[]>();
  return {
    on(name, listener) {
      const list = listeners.get(name) ?? [];
      list.push(listener as (event: never) => void);
      listeners.set(name, list);
      return () => {
        const i = list.indexOf(listener as (event: never) => void);
        if (i >= 0) list.splice(i, 1);
      };
    },
    emit(name, event) {
      const list = listeners.get(name);
      if (!list) return;
      for (const listener of list) {
        try {
          (listener as (e: typeof event) => void)(event);
        } catch (err: unknown) {
          try {
            onListenerError?.(err, name);
          } catch {
            // Observability must never fail a job.
          }
        }
      }
    },
    has: (name) => (listeners.get(name)?.length ?? 0) > 0,
  };
}
