import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createApiServer } from '../../src/api/api-server.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import type { Config } from '../../src/config/config.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import { removePrefixKeys, startReceiver, startTestWorker, testConfig, testContext, waitFor, type Receiver } from '../support/harness.js';

/* GET /v1/jobs/:jobId and /v1/dlq/:jobId: what they answer for a replayed job, and for an id in upper case. */

const J = { 'content-type': 'application/json' };
let config: Config;
let ctx: RelayContext;
let api: FastifyInstance;
let receiver: Receiver;
let worker: Awaited<ReturnType<typeof startTestWorker>>;

beforeAll(async () => {
  receiver = await startReceiver();
  receiver.handler = (req, res) => {
    if (req.url.startsWith('/reject')) res.writeHead(422, { 'content-type': 'application/json' }).end('{"code":"INVALID_PHONE"}');
    else res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  };
  // Finished jobs are forgotten after 1 s, as after JOB_RETENTION_SECONDS in production.
  config = testConfig({ JOB_RETENTION_SECONDS: '1' });
  ctx = await testContext(config);
  api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
  worker = await startTestWorker(config);
  await ctx.store.put({
    id: 'sms',
    name: 'sms',
    endpoint: { url: receiver.url, path: '/reject', method: 'POST' },
    body: {},
    retry: { maxAttempts: 1 },
    errorResponse: { fields: { code: { type: 'string' } } },
  } as never);
  await ctx.store.put({ id: 'ok', name: 'ok', endpoint: { url: receiver.url, path: '/ok', method: 'POST' }, body: {} });
});

afterAll(async () => {
  await worker?.stop();
  await api?.close();
  await ctx?.close();
  await receiver?.close();
  await removePrefixKeys(config);
});

const enqueue = async (job: unknown) => {
  const res = await api.inject({ method: 'POST', url: '/v1/jobs', payload: JSON.stringify(job), headers: J });
  expect(res.statusCode, res.body).toBe(202);
  return res.json() as { jobId: string; deduplicated: boolean };
};
const status = async (jobId: string) => (await api.inject({ method: 'GET', url: `/v1/jobs/${jobId}` })).json() as Record<string, unknown>;
const ended = (jobId: string) =>
  waitFor(
    async () => {
      const s = await status(jobId);
      return s.state === 'delivered' || s.state === 'dead' ? s : undefined;
    },
    20_000,
    `job ${jobId} to end`,
  );

describe('a replayed dead job', () => {
  it('keeps error.errorResponse once its job hash has expired (the answer then comes from the replay pointer)', async () => {
    const { jobId } = await enqueue({ actionId: 'sms', params: {} });
    const dead = await ended(jobId);
    expect(dead).toMatchObject({ state: 'dead', error: { reason: 'http_status', status: 422, errorResponse: { code: 'INVALID_PHONE' } } });

    const replay = await api.inject({ method: 'POST', url: '/v1/dlq/replay', payload: JSON.stringify({ jobIds: [jobId] }), headers: J });
    expect(replay.statusCode).toBe(200);
    const newId = (replay.json() as { jobIds: string[] }).jobIds[0] as string;
    await ended(newId);
    expect(await status(jobId)).toEqual({ ...dead, replayedAs: newId });

    // JOB_RETENTION_SECONDS later, BullMQ drops the dead job's hash when another job completes.
    await new Promise((r) => setTimeout(r, 1500));
    await ended((await enqueue({ actionId: 'ok', params: {} })).jobId);
    await waitFor(async () => (await ctx.redis.exists(ctx.queues.partitions[0]!.keys.jobKey(jobId))) === 0, 10_000, 'retention');

    expect(await status(jobId)).toEqual({ ...dead, replayedAs: newId });
  }, 60_000);
});

describe('a job id in upper case (isJobId takes either case)', () => {
  it('GET /v1/jobs/:jobId finds the job', async () => {
    const { jobId } = await enqueue({ actionId: 'ok', params: {}, delayMs: 60_000 });
    const upper = await api.inject({ method: 'GET', url: `/v1/jobs/${jobId.toUpperCase()}` });
    expect(upper.statusCode, upper.body).toBe(200);
    expect(upper.json()).toMatchObject({ jobId, state: 'delayed' });
  });

  it('GET and DELETE /v1/dlq/:jobId find the dead letter', async () => {
    const { jobId } = await enqueue({ actionId: 'sms', params: {} });
    await ended(jobId);
    const got = await api.inject({ method: 'GET', url: `/v1/dlq/${jobId.toUpperCase()}` });
    expect(got.statusCode, got.body).toBe(200);
    expect(got.json()).toMatchObject({ jobId });
    const removed = await api.inject({ method: 'DELETE', url: `/v1/dlq/${jobId.toUpperCase()}` });
    expect(removed.statusCode, removed.body).toBe(200);
    expect(removed.json()).toEqual({ purged: 1 });
  }, 30_000);
});
