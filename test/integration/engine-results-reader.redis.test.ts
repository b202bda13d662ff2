import { afterEach, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createApiServer } from '../../src/api/api-server.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import { createProducer, type RelayProducer } from '../../src/producer.js';
import { readResults, setupRun, startTestWorker, trackRuns, waitFor } from '../support/harness.js';

/*
 * The journey engine's side: what the engine's own entry point (`action-relay/producer`) gives it
 * back, and what an enqueue retried by the engine does.
 */

const { cleanups } = trackRuns();
const open: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (open.length > 0) await open.pop()?.();
});

describe('the journey engine reading results through action-relay/producer', () => {
  it("readResults and resultsGroup entries carry idempotencyKey and replayOf (docs/journey-engine.md, 'Dead, then a replay's delivered')", async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    let healthy = false;
    receiver.handler = (_r, res) => res.writeHead(healthy ? 200 : 404, { 'content-type': 'application/json' }).end('{}');
    await ctx.store.put({ id: 'je_step', name: 'je_step', endpoint: { url: receiver.url, path: '/step', method: 'POST' }, body: { a: 1 } });
    const relay: RelayProducer = await createProducer({
      redisUrl: config.REDIS_URL,
      prefix: config.ACTION_RELAY_PREFIX,
      partitions: 1,
      env: {},
      onWarning: () => undefined,
    });
    open.push(() => relay.close());
    const group = await relay.resultsGroup('journey-engine', 'engine-1', { startAt: 'start' });
    const worker = await startTestWorker(config);
    cleanups.push(() => worker.stop());

    const { jobId: deadId } = await relay.enqueue({ actionId: 'je_step', params: {}, idempotencyKey: 'journey-9:node-1:profile-1' });
    await waitFor(() => ctx.deadLetters.get(deadId), 20_000, 'the dead letter');
    healthy = true;
    const api: FastifyInstance = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
    open.push(() => api.close());
    const replay = await api.inject({ method: 'POST', url: '/v1/dlq/replay', payload: { jobIds: [deadId] } });
    expect(replay.statusCode).toBe(200);
    const newId = (replay.json() as { jobIds: string[] }).jobIds[0] as string;
    await waitFor(async () => (await readResults(ctx)).length >= 2, 20_000, 'two results entries');

    // The raw stream has both fields (written by outcome-writer's appendResult).
    const raw = await readResults(ctx);
    expect(raw[1]).toMatchObject({ jobId: newId, replayOf: deadId, idempotencyKey: 'journey-9:node-1:profile-1' });

    // The typed readers the engine is told to use.
    const read = await relay.readResults({ after: 'start' });
    expect(read.malformed).toEqual([]);
    expect(read.entries.map((e) => e.jobId)).toEqual([deadId, newId]);
    expect(read.entries[1], 'readResults() drops the replayOf / idempotencyKey fields of the entry').toMatchObject({
      replayOf: deadId,
      idempotencyKey: 'journey-9:node-1:profile-1',
    });
    const batch = await group.read({ count: 10 });
    expect(batch.entries[0], 'resultsGroup().read() drops idempotencyKey').toMatchObject({ idempotencyKey: 'journey-9:node-1:profile-1' });
  }, 90_000);
});

describe('an enqueue retried by the journey engine', () => {
  it('the same idempotency key within IDEMPOTENCY_TTL_SECONDS stays one job after the first job left the queue (JOB_RETENTION_SECONDS shorter)', async () => {
    // A deployment that keeps finished jobs readable for a short time, but deduplicates for a day.
    const { receiver, config, ctx } = await setupRun(cleanups, { JOB_RETENTION_SECONDS: '1', IDEMPOTENCY_TTL_SECONDS: '86400' });
    receiver.handler = (_r, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    await ctx.store.put({ id: 'je_sms', name: 'je_sms', endpoint: { url: receiver.url, path: '/sms', method: 'POST' }, body: { a: 1 } });
    const worker = await startTestWorker(config);
    cleanups.push(() => worker.stop());

    const first = await ctx.producer.enqueue({ actionId: 'je_sms', params: {}, idempotencyKey: 'journey-1:node-1:profile-1' });
    await waitFor(async () => (await readResults(ctx)).length >= 1, 20_000, 'the first job to end');
    // Time passes; other jobs end (BullMQ removes completed jobs older than their age as others finish).
    await new Promise((r) => setTimeout(r, 2500));
    await ctx.producer.enqueue({ actionId: 'je_sms', params: {}, idempotencyKey: 'another-step' });
    await waitFor(async () => (await readResults(ctx)).length >= 2, 20_000, 'the second job to end');

    // The engine retries its first enqueue (a timeout on its side, a restart): still within the TTL.
    const again = await ctx.producer.enqueue({ actionId: 'je_sms', params: {}, idempotencyKey: 'journey-1:node-1:profile-1' });
    expect(again, 'the retried enqueue made a second job: the step is delivered twice').toEqual({ jobId: first.jobId, deduplicated: true });
  }, 90_000);

  it('GET /v1/jobs/:id of a dead job agrees with its results entry', async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    receiver.handler = (_r, res) => res.writeHead(422, { 'content-type': 'application/json' }).end('{"code":"bad"}');
    await ctx.store.put({
      id: 'je_dead',
      name: 'je_dead',
      endpoint: { url: receiver.url, path: '/x', method: 'POST' },
      body: { a: 1 },
      errorResponse: { fields: { code: { type: 'string' } } },
    });
    const worker = await startTestWorker(config);
    cleanups.push(() => worker.stop());
    const { jobId } = await ctx.producer.enqueue({ actionId: 'je_dead', params: {} });
    const [entry] = await waitFor(async () => {
      const r = await readResults(ctx);
      return r.length >= 1 ? r : undefined;
    }, 20_000);
    const api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
    open.push(() => api.close());
    const status = (await api.inject({ method: 'GET', url: `/v1/jobs/${jobId}` })).json();
    expect(entry).toMatchObject({ jobId, outcome: 'dead', status: '422', reason: 'http_status', attempts: '1' });
    expect(status).toMatchObject({
      jobId,
      state: 'dead',
      attempts: 1,
      error: { reason: 'http_status', status: 422, errorResponse: { code: 'bad' } },
    });
    expect(JSON.parse(entry?.errorResponse ?? '{}')).toEqual({ code: 'bad' });
  }, 60_000);
});
