import { UnrecoverableError, Worker } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiServer } from '../../src/api/api-server.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import { createStalledSweeper } from '../../src/queue/stalled-sweeper.js';
import { readResults, setupRun, startTestWorker, waitFor, type Receiver } from '../support/harness.js';

/*
 * What the queue board's buttons do to action-relay's own bookkeeping (docs/api.md,
 * "The queue board": cleaning is allowed for ended jobs only; nothing may deliver twice or drop a
 * journey's outcome).
 */

const cleanups: (() => Promise<void>)[] = [];
let receiver: Receiver;
let ctx: RelayContext;
let api: FastifyInstance;

beforeAll(async () => {
  const run = await setupRun(cleanups);
  receiver = run.receiver;
  ctx = run.ctx;
  api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
  cleanups.push(() => api.close());
  await ctx.store.put({
    id: 'board_ok',
    name: 'board ok',
    endpoint: { url: receiver.url, path: '/ok', method: 'POST' },
    parameters: { n: { type: 'integer', required: true } },
    body: { n: '{{params.n}}' },
  });
});

afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

const board = (method: 'PUT' | 'GET', path: string) => api.inject({ method, url: `/admin/queues/api/queues/${path}` });

describe('queue board: cleaning completed jobs', () => {
  it('"Clean all" and one job\'s clean are refused for completed jobs: the idempotency key and the status stay', async () => {
    const worker = await startTestWorker(ctx.config);
    try {
      const first = await ctx.producer.enqueue({ actionId: 'board_ok', params: { n: 1 }, idempotencyKey: 'order-42' });
      await waitFor(async () => (await ctx.queue.getJob(first.jobId))?.returnvalue, 30_000, 'the delivery');
      const sent = receiver.requests.filter((r) => r.url === '/ok').length;
      // BullMQ's clean removes the job's deduplication key with it: the same key would be a new job.
      expect((await board('PUT', 'deliveries/clean/completed')).statusCode).toBe(403);
      expect((await board('PUT', `deliveries/${first.jobId}/clean`)).statusCode).toBe(403);

      // The engine retries its enqueue with the same idempotency key (within IDEMPOTENCY_TTL_SECONDS).
      const again = await ctx.producer.enqueue({ actionId: 'board_ok', params: { n: 1 }, idempotencyKey: 'order-42' });
      expect(again).toEqual({ jobId: first.jobId, deduplicated: true });
      expect((await api.inject({ method: 'GET', url: `/v1/jobs/${first.jobId}` })).json()).toMatchObject({ state: 'delivered' });
      await new Promise((r) => setTimeout(r, 1000));
      expect(receiver.requests.filter((r) => r.url === '/ok').length, 'a second delivery of the same key').toBe(sent);
    } finally {
      await worker.stop();
    }
  }, 60_000);
});

describe('queue board: cleaning failed jobs', () => {
  it('cleaning a failed job that has no outcome yet (not swept) is refused, or its journey never gets a results entry', async () => {
    const { jobId } = await ctx.producer.enqueue({ actionId: 'board_ok', params: { n: 4 } });
    // BullMQ fails a job by itself (stalled too often, or a fault of the relay): the sweeper has not ended it yet.
    const bare = new Worker(ctx.queue.name, null, { connection: ctx.bullConnection, prefix: ctx.queue.opts.prefix, autorun: false });
    cleanups.push(() => bare.close());
    const token = 'board-test-token';
    const job = await waitFor(() => bare.getNextJob(token), 10_000, 'the job');
    expect(job.id).toBe(jobId);
    await job.moveToFailed(new UnrecoverableError('job stalled more than allowable limit'), token);
    expect(await job.getState()).toBe('failed');

    const clean = await board('PUT', `deliveries/${jobId}/clean`);
    // The sweeper now runs (every worker does, once a minute).
    const sweeper = createStalledSweeper({
      queues: ctx.queues,
      redis: ctx.redis,
      outcomes: ctx.outcomes,
      metrics: ctx.metrics,
      logger: ctx.logger,
    });
    await sweeper.sweep();
    const entry = (await readResults(ctx)).find((r) => r.jobId === jobId);
    expect(clean.statusCode, 'the board may not remove a failed job before it has ended').toBe(403);
    expect(entry?.outcome).toBe('dead');
    // Ended by the sweeper: now it may go.
    expect((await board('PUT', `deliveries/${jobId}/clean`)).statusCode).toBe(204);
  }, 60_000);
});

describe('queue board: bad input', () => {
  it('a queue name that is not valid percent-encoding is a 404, not a 500', async () => {
    const res = await board('PUT', '%25zz/pause');
    expect(res.statusCode).toBe(404);
  });
});
