import { ReplyError } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createContextTokens, type RelayContext } from '../../src/context/relay-context.js';
import type { Config } from '../../src/config/config.js';
import { createDeliveryWorker, type DeliveryWorker } from '../../src/delivery/delivery-worker.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import { getJobStatus } from '../../src/queue/job-status.js';
import type { OutcomeWriter } from '../../src/queue/outcome-writer.js';
import { readResults, removePrefixKeys, startReceiver, testConfig, testContext, waitFor, type Receiver } from '../support/harness.js';

/*
 * Redis refuses the write of a delivered job's outcome (the READONLY of a master demoted by a
 * failover) on the job's last attempt, and accepts writes again at once (the client has
 * reconnected to the new master). The job was delivered: it must not end dead, as the attempt's
 * failure path would end it, but run again and end delivered.
 */

let config: Config;
let ctx: RelayContext;
let receiver: Receiver;
let delivery: DeliveryWorker;
let refusals = 0;

beforeAll(async () => {
  receiver = await startReceiver();
  config = testConfig();
  ctx = await testContext(config);
  await ctx.store.put({
    id: 'last-try',
    name: 'last-try',
    endpoint: { url: receiver.url, path: '/m', method: 'POST' },
    body: {},
    retry: { maxAttempts: 1 },
  });
  // The first delivered outcome of the test's job is refused as a demoted master refuses it.
  const outcomes: OutcomeWriter = Object.create(ctx.outcomes) as OutcomeWriter;
  outcomes.finish = (partition, entry, connection) => {
    if (entry.outcome === 'delivered' && refusals === 0) {
      refusals++;
      return Promise.reject(new ReplyError("READONLY You can't write against a read only replica."));
    }
    return ctx.outcomes.finish(partition, entry, connection);
  };
  const sender = createHttpSender({ guard: ctx.egress });
  delivery = createDeliveryWorker({
    connection: ctx.bullConnection,
    keys: ctx.keys,
    store: ctx.store,
    sender,
    secrets: ctx.secrets,
    tokens: createContextTokens(ctx, sender),
    outcomes,
    metrics: ctx.metrics,
    logger: ctx.logger,
    concurrency: 2,
  });
});

afterAll(async () => {
  await delivery.close();
  await receiver.close();
  await ctx.close();
  await removePrefixKeys(config);
});

describe('a delivered outcome that Redis refuses on the last attempt', () => {
  it('runs the job again and ends it delivered, never dead', async () => {
    const { jobId } = await ctx.producer.enqueue({ actionId: 'last-try', params: {}, idempotencyKey: 'order-7' });
    const ended = await waitFor(
      async () => {
        const s = await getJobStatus(ctx.queues, ctx.redis, jobId);
        return s && (s.state === 'delivered' || s.state === 'dead') ? s : undefined;
      },
      20_000,
      'the job to end',
    );
    expect(refusals).toBe(1);
    expect(ended.state).toBe('delivered');
    const entries = (await readResults(ctx)).filter((e) => e.jobId === jobId);
    expect(entries.map((e) => `${e.outcome} ${e.status}`)).toEqual(['delivered 200']);
    expect(await ctx.deadLetters.get(jobId)).toBeNull();
    // Sent again by the second run, under the same key: the third party can tell.
    expect(receiver.requests.map((r) => r.headers['idempotency-key'])).toEqual(['order-7', 'order-7']);
  }, 30_000);
});
