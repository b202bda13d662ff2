import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runWorker, type RunningWorker } from '../../src/cli/run-worker.js';
import type { Config } from '../../src/config/config.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import { getJobStatus } from '../../src/queue/job-status.js';
import { readResults, removePrefixKeys, startReceiver, testConfig, testContext, waitFor, type Receiver } from '../support/harness.js';

/*
 * A run whose lock lapses while its request is in flight (lock renewals that cannot reach Redis
 * for longer than JOB_LOCK_MS; here the lock key is deleted) writes the job's end, but BullMQ's
 * completion then fails and the stalled check hands the job out again. The run after it must not
 * end the job a second way: the third party answers the repeated Idempotency-Key with 409, which
 * would otherwise make the job's status 'dead' (with no dead letter to replay) while the results
 * stream says delivered.
 */

let config: Config;
let ctx: RelayContext;
let worker: RunningWorker;
let receiver: Receiver;

beforeAll(async () => {
  receiver = await startReceiver();
  receiver.handler = (_r, res) => {
    const first = receiver.requests.length === 1;
    setTimeout(
      () =>
        res
          .writeHead(first ? 200 : 409, { 'content-type': 'application/json' })
          .end(first ? '{"id":"first"}' : '{"error":"idempotency key already used"}'),
      3000,
    );
  };
  config = testConfig({ JOB_LOCK_MS: '1000', WORKER_CONCURRENCY: '4' });
  ctx = await testContext(config);
  await ctx.store.put({
    id: 'once',
    name: 'once',
    endpoint: { url: receiver.url, path: '/m', method: 'POST', timeoutMs: 20_000 },
    body: {},
  });
  worker = await runWorker(config, ctx);
});

afterAll(async () => {
  await worker.stop();
  await receiver.close();
  await ctx.close();
  await removePrefixKeys(config);
});

describe('a job whose end was written by a run that lost its lock', () => {
  it('ends once, as that run ended it: status, results entry and dead letters agree', async () => {
    const { jobId } = await ctx.producer.enqueue({ actionId: 'once', params: {}, idempotencyKey: 'order-1' });
    await waitFor(() => receiver.requests.length >= 1, 10_000, 'the first request');
    await ctx.redis.del(`${ctx.keys.jobKey(jobId)}:lock`);

    const ended = await waitFor(
      async () => {
        const s = await getJobStatus(ctx.queues, ctx.redis, jobId);
        return s && (s.state === 'delivered' || s.state === 'dead') ? s : undefined;
      },
      30_000,
      'the job to end',
    );
    // Every run the stalled checks could start has had its answer by now.
    await new Promise((r) => setTimeout(r, 4000));
    expect(ended.state).toBe('delivered');
    expect(await getJobStatus(ctx.queues, ctx.redis, jobId)).toMatchObject({ state: 'delivered', attempts: 1 });
    const entries = (await readResults(ctx)).filter((e) => e.jobId === jobId);
    expect(entries.map((e) => `${e.outcome} ${e.status}`)).toEqual(['delivered 200']);
    expect(await ctx.deadLetters.get(jobId)).toBeNull();
    // The run after the lapse may send once more before the first answer comes (the key lets the
    // third party tell); a run that finds the job ended sends nothing.
    expect(receiver.requests.length).toBeLessThanOrEqual(2);
  }, 60_000);
});
