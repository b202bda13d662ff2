import { ValidationError } from '../errors/errors.js';
import type { Producer } from '../queue/producer.js';
import { safely, type EnqueueResultLabel, type RelayMetrics } from './relay-metrics.js';

/**
 * The producer with enqueue RED metrics: each job offered is counted by result (accepted,
 * deduplicated, invalid, error) and each call timed, whatever calls it (the API, the CLI, the
 * library). Errors pass through unchanged.
 */
export function instrumentProducer(producer: Producer, metrics: Pick<RelayMetrics, 'enqueued' | 'enqueueDuration'>): Producer {
  const count = (result: EnqueueResultLabel, n = 1) => safely(() => n > 0 && metrics.enqueued.inc({ result }, n));
  return {
    async enqueue(input) {
      const end = metrics.enqueueDuration.startTimer({ kind: 'single' });
      try {
        const r = await producer.enqueue(input);
        count(r.deduplicated ? 'deduplicated' : 'accepted');
        return r;
      } catch (err: unknown) {
        count(err instanceof ValidationError ? 'invalid' : 'error');
        throw err;
      } finally {
        safely(() => end());
      }
    },
    async enqueueMany(inputs) {
      const end = metrics.enqueueDuration.startTimer({ kind: 'batch' });
      try {
        const results = await producer.enqueueMany(inputs);
        const tally = { accepted: 0, deduplicated: 0, invalid: 0 };
        for (const r of results) {
          if ('error' in r) tally.invalid++;
          else if (r.deduplicated) tally.deduplicated++;
          else tally.accepted++;
        }
        for (const [result, n] of Object.entries(tally)) count(result as EnqueueResultLabel, n);
        return results;
      } catch (err: unknown) {
        // The whole batch was refused (too large, not a list) or Redis failed: every job counts.
        count(err instanceof ValidationError ? 'invalid' : 'error', Array.isArray(inputs) ? Math.max(1, inputs.length) : 1);
        throw err;
      } finally {
        safely(() => end());
      }
    },
  };
}
