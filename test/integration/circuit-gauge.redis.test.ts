import { afterAll, describe, expect, it } from 'vitest';
import { readResults, setupRun, startTestWorker, waitFor } from '../support/harness.js';

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

describe('action_relay_circuit_state', () => {
  it('goes back to 0 in a worker that saw the circuit open once another worker closed it', async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    let failing = true;
    receiver.handler = (_r, res) => (failing ? res.writeHead(500).end('down') : res.writeHead(200).end('{}'));
    await ctx.store.put({
      id: 'fragile',
      name: 'fragile',
      endpoint: { url: receiver.url, path: '/f', method: 'POST' },
      body: { a: 1 },
      retry: { maxAttempts: 1 },
      circuitBreaker: { failureRatio: 0.5, minRequests: 2, windowMs: 60_000, openMs: 600_000 },
    });
    const key = (await ctx.store.getCompiled('fragile'))?.limitKey ?? '';
    const worker = await startTestWorker(config);
    cleanups.push(() => worker.stop());
    const state = async () => (await worker.ctx.metrics.circuitState.get()).values.find((v) => v.labels.key === key)?.value;

    await ctx.producer.enqueueMany([
      { actionId: 'fragile', params: {} },
      { actionId: 'fragile', params: {} },
    ]);
    await waitFor(async () => (await readResults(ctx)).length === 2, 10_000, 'two dead jobs');
    expect(await state()).toBe(1);

    // Another worker's probe succeeded and closed the circuit: this worker never saw that transition.
    await ctx.redis.del(ctx.keys.circuit(key));
    failing = false;
    await ctx.producer.enqueue({ actionId: 'fragile', params: {} });
    await waitFor(async () => (await readResults(ctx)).length === 3, 10_000, 'the third job');
    expect((await readResults(ctx))[2]?.outcome).toBe('delivered');
    expect(await state()).toBe(0);
  });
});
