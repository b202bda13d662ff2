import { describe, expect, it } from 'vitest';
import { FEW_JOBS } from '../../src/queue/producer.js';
import { setupRun, trackRuns } from '../support/harness.js';

const { cleanups } = trackRuns();

/**
 * enqueueMany adds a few jobs one call per job and more with BullMQ's addBulk: both ways must give
 * the same answers (input order, refusals in place, idempotency keys within and across batches)
 * and queue the jobs in input order.
 */
describe('enqueueMany, a few jobs and many', () => {
  it.each([
    ['a few', FEW_JOBS - 1],
    ['many', FEW_JOBS * 3],
  ])('%s jobs: answers in input order, duplicates and refusals in place, queued in order', async (_label, size) => {
    const { receiver, ctx } = await setupRun(cleanups);
    await ctx.store.put({
      id: 'note',
      name: 'note',
      endpoint: { url: receiver.url, path: '/n', method: 'POST' },
      parameters: { n: { type: 'integer', required: true } },
      body: { n: '{{params.n}}' },
    });
    const before = await ctx.producer.enqueue({ actionId: 'note', params: { n: -1 }, idempotencyKey: 'seen-before' });

    const inputs: unknown[] = Array.from({ length: size }, (_, i) => ({ actionId: 'note', params: { n: i }, idempotencyKey: `k-${i}` }));
    inputs[1] = { actionId: 'note', params: { n: 1 }, idempotencyKey: 'k-0' };
    inputs[size - 1] = { actionId: 'note', params: { n: size - 1 }, idempotencyKey: 'seen-before' };
    inputs.splice(1, 0, { actionId: 'no such action', params: {} });
    const answers = await ctx.producer.enqueueMany(inputs);

    expect(answers).toHaveLength(size + 1);
    expect(answers[1]).toMatchObject({ error: { code: 'validation_failed', details: [{ path: 'jobs[1].actionId' }] } });
    const ok = answers.filter((a): a is { jobId: string; deduplicated: boolean } => 'jobId' in a);
    expect(ok).toHaveLength(size);
    // k-0 twice in the batch: one job, the second answer names it; seen-before names the earlier job.
    expect(ok[1]).toEqual({ jobId: ok[0]?.jobId, deduplicated: true });
    expect(ok[size - 1]).toEqual({ jobId: before.jobId, deduplicated: true });
    expect(ok.filter((a) => !a.deduplicated)).toHaveLength(size - 2);

    // The new jobs wait in input order (one priority: first in, first out), with their params.
    const waiting = await ctx.queue.getPrioritized(0, -1);
    const fresh = ok.filter((a) => !a.deduplicated).map((a) => a.jobId);
    expect(waiting.map((j) => j.id)).toEqual([before.jobId, ...fresh]);
    expect(waiting.slice(1).map((j) => (j.data as { params: { n: number } }).params.n)).toEqual(
      Array.from({ length: size }, (_, i) => i).filter((i) => i !== 1 && i !== size - 1),
    );
  });
});
