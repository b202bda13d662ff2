import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config/config.js';
import { FRESH_PRIORITY } from '../../src/queue/delivery-queue.js';
import { createResultsReader, type ResultBatch } from '../../src/queue/results-reader.js';
import { removePrefixKeys, startReceiver, startTestWorker, testConfig, waitFor, type Receiver } from '../support/harness.js';

/*
 * BullMQ stamps a job with the clock of the host that enqueued it; the worker ends it on its own.
 * A producer whose clock runs ahead must not give an entry the results reader refuses (the
 * journey would never see the outcome): the duration is never negative.
 */

let config: Config;
let worker: Awaited<ReturnType<typeof startTestWorker>>;
let receiver: Receiver;

beforeAll(async () => {
  receiver = await startReceiver();
  receiver.handler = (r, res) => void res.writeHead(r.url === '/ok' ? 200 : 400, { 'content-type': 'application/json' }).end('{}');
  config = testConfig();
  worker = await startTestWorker(config);
  for (const id of ['ok', 'refused']) {
    await worker.ctx.store.put({
      id: `skew_${id}`,
      name: id,
      endpoint: { url: receiver.url, path: id === 'ok' ? '/ok' : '/no', method: 'POST' },
      body: {},
    });
  }
});

afterAll(async () => {
  await worker.stop();
  await receiver.close();
  await removePrefixKeys(config);
});

describe('a producer clock ahead of the worker', () => {
  it('still gives readable results entries, delivered and dead, with a duration of at least 0', async () => {
    const ahead = Date.now() + 60_000;
    const { ctx } = worker;
    for (const id of ['ok', 'refused']) {
      await ctx.queue.add(`skew_${id}`, { params: {}, context: {} }, { jobId: `skewed-${id}`, priority: FRESH_PRIORITY, timestamp: ahead });
    }
    const reader = createResultsReader(ctx.redis, ctx.keys.partitions);
    const read = await waitFor(
      async () => {
        const batch: ResultBatch = await reader.read({ after: 'start' });
        return batch.entries.length + batch.malformed.length >= 2 ? batch : undefined;
      },
      10_000,
      'both entries',
    );
    expect(read.malformed).toEqual([]);
    const byJob = Object.fromEntries(read.entries.map((e) => [e.jobId, e]));
    expect(byJob['skewed-ok']).toMatchObject({ outcome: 'delivered', durationMs: 0 });
    expect(byJob['skewed-refused']).toMatchObject({ outcome: 'dead', reason: 'http_status', durationMs: 0 });
  });
});
