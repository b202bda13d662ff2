import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GROUP, ack, createResultsGroup, readResults, runExample } from '../../examples/journey-engine.js';
import { removePrefixKeys, startReceiver, startTestWorker, testConfig, testContext, waitFor, type Receiver } from '../support/harness.js';
import type { Config } from '../../src/config/config.js';
import type { RelayContext } from '../../src/context/relay-context.js';

/** The journey-engine guide's example, run as written against a loopback receiver and a worker. */

let config: Config;
let ctx: RelayContext;
let receiver: Receiver;
let worker: Awaited<ReturnType<typeof startTestWorker>>;
/** Phones refused once (422): their job dies, its replay is delivered. */
const refused = new Set<string>();

beforeAll(async () => {
  receiver = await startReceiver();
  receiver.handler = (r, res) => {
    const phone = decodeURIComponent(r.url.split('/')[2] ?? '');
    if (phone.endsWith('000') && !refused.has(phone)) {
      refused.add(phone);
      res.writeHead(422, { 'content-type': 'application/json' }).end('{"error":"unknown number"}');
      return;
    }
    res.writeHead(202, { 'content-type': 'application/json' }).end('{"messageId":"m1"}');
  };
  config = testConfig();
  ctx = await testContext(config);
  worker = await startTestWorker(config);
});

afterAll(async () => {
  await worker.stop();
  await ctx.close();
  await receiver.close();
  await removePrefixKeys(config);
});

describe('examples/journey-engine.ts', () => {
  it('follows every journey step to its end: delivered ones, and a dead one through its replay', async () => {
    const lines: string[] = [];
    const { steps, replays } = await runExample({
      redisUrl: config.REDIS_URL,
      prefix: config.ACTION_RELAY_PREFIX,
      receiverUrl: receiver.url,
      phones: ['+33600000001', '+33600000000', '+33600000002'],
      replayDead: true,
      log: (l) => lines.push(l),
    });
    expect(steps.size).toBe(3);
    for (const step of steps.values()) expect(step).toMatchObject({ outcome: 'delivered', status: 202 });
    const replayed = steps.get('journey-42:node-7:profile-1');
    expect(replays).toHaveLength(1);
    expect(replayed).toMatchObject({ replayOf: replays[0]?.from, jobId: replays[0]?.jobId, context: { journeyId: 'journey-42' } });
    expect(lines.some((l) => /profile-1: dead 422 http_status after 1 attempt/.test(l))).toBe(true);
    // Everything read was acknowledged: nothing left pending for the group.
    const [pending] = (await ctx.redis.xpending(ctx.keys.results, GROUP)) as [number];
    expect(pending).toBe(0);
  });

  it('a reader that crashes before XACK leaves its entries pending; the next reader claims them', async () => {
    const stream = ctx.keys.results;
    await createResultsGroup(ctx.redis, stream);
    const { jobId } = await ctx.producer.enqueue({ actionId: 'journey_sms', params: { phone: '+33600000009', text: 'hi' } });
    const read = await waitFor(
      async () => {
        const got = await readResults(ctx.redis, stream, 'engine-crashed', { blockMs: 200 });
        return got.find((e) => e.jobId === jobId);
      },
      10_000,
      'the entry read by the first reader',
    );
    expect(read.idempotencyKey).toBe(jobId);
    // engine-crashed never acknowledges; engine-2 takes the entry over once it has been idle long enough.
    const claimed = await readResults(ctx.redis, stream, 'engine-2', { minIdleMs: 0 });
    expect(claimed.map((e) => e.jobId)).toEqual([jobId]);
    await ack(ctx.redis, claimed);
    const [pending] = (await ctx.redis.xpending(stream, GROUP)) as [number];
    expect(pending).toBe(0);
  });
});
