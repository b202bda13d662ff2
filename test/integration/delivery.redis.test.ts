import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createApiServer } from '../../src/api/api-server.js';
import { createDeliveryWorker, type DeliveryWorker } from '../../src/delivery/delivery-worker.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import type { Config } from '../../src/config/config.js';
import { readResults, removePrefixKeys, startReceiver, testConfig, testContext, waitFor, type Receiver } from '../support/harness.js';

const env = {
  ...process.env,
  ACTION_SECRET_T_BEARER: 'bearer-secret-123',
  ACTION_SECRET_T_KEY: 'key-secret-456',
  ACTION_SECRET_T_PASS: 'pass-secret-789',
};

let config: Config;
let ctx: RelayContext;
let workerCtx: RelayContext;
let delivery: DeliveryWorker;
let receiver: Receiver;
let api: FastifyInstance;

function action(id: string, extra: Record<string, unknown> = {}) {
  return {
    id,
    name: `test ${id}`,
    endpoint: { url: receiver.url, path: `/${id}`, method: 'POST' },
    parameters: { n: { type: 'integer' } },
    body: { n: '{{params.n}}' },
    retry: { maxAttempts: 3, backoff: { type: 'fixed', delayMs: 20, maxDelayMs: 20 } },
    ...extra,
  };
}

async function resultOf(jobId: string) {
  return waitFor(async () => (await readResults(ctx)).find((r) => r.jobId === jobId), 10_000, `result of ${jobId}`);
}

beforeAll(async () => {
  receiver = await startReceiver();
  config = testConfig();
  ctx = await testContext(config, env);
  // The worker has its own connections and cache, as a separate process would.
  workerCtx = await testContext(config, env);
  delivery = createDeliveryWorker({
    connection: workerCtx.bullConnection,
    keys: workerCtx.keys,
    store: workerCtx.store,
    sender: createHttpSender({ guard: workerCtx.egress }),
    secrets: workerCtx.secrets,
    outcomes: workerCtx.outcomes,
    metrics: workerCtx.metrics,
    logger: workerCtx.logger,
    concurrency: 8,
    maxResponseBytes: 64 * 1024,
  });
  api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
});

afterAll(async () => {
  await delivery.close();
  await api.close();
  await ctx.close();
  await workerCtx.close();
  await receiver.close();
  await removePrefixKeys(config);
});

beforeEach(() => {
  receiver.requests.length = 0;
  receiver.handler = (_r, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
});

describe('delivery through a real worker and receiver', () => {
  it('delivers with each auth type arriving as the receiver expects', async () => {
    await ctx.store.put(action('auth_bearer', { auth: { type: 'bearer', token: { env: 'ACTION_SECRET_T_BEARER' } } }));
    await ctx.store.put(action('auth_basic', { auth: { type: 'basic', username: 'ada', password: { env: 'ACTION_SECRET_T_PASS' } } }));
    await ctx.store.put(
      action('auth_key_h', { auth: { type: 'apiKey', name: 'X-Api-Key', in: 'header', value: { env: 'ACTION_SECRET_T_KEY' } } }),
    );
    await ctx.store.put(
      action('auth_key_q', { auth: { type: 'apiKey', name: 'api_key', in: 'query', value: { env: 'ACTION_SECRET_T_KEY' } } }),
    );
    for (const id of ['auth_bearer', 'auth_basic', 'auth_key_h', 'auth_key_q']) {
      const { jobId } = await ctx.producer.enqueue({ actionId: id, params: { n: 1 } });
      expect((await resultOf(jobId)).outcome).toBe('delivered');
    }
    const by = (p: string) => receiver.requests.find((r) => r.url.startsWith(p));
    expect(by('/auth_bearer')?.headers.authorization).toBe('Bearer bearer-secret-123');
    expect(by('/auth_basic')?.headers.authorization).toBe(`Basic ${Buffer.from('ada:pass-secret-789').toString('base64')}`);
    expect(by('/auth_key_h')?.headers['x-api-key']).toBe('key-secret-456');
    expect(new URL(by('/auth_key_q')?.url ?? '', receiver.url).searchParams.get('api_key')).toBe('key-secret-456');
    const r = by('/auth_bearer');
    expect(r?.headers['user-agent']).toMatch(/^action-relay\/\d+\.\d+\.\d+$/);
    expect(r?.headers['content-type']).toBe('application/json');
    expect(JSON.parse(r?.body ?? '')).toEqual({ n: 1 });
  });

  it('captures response fields onto the results stream and GET /v1/jobs/:id', async () => {
    await ctx.store.put(action('capture', { response: { fields: { messageId: { type: 'string' }, segments: { type: 'integer' } } } }));
    receiver.handler = (_r, res) =>
      res.writeHead(201, { 'content-type': 'application/json' }).end('{"messageId":"m-1","segments":2,"other":true}');
    const { jobId } = await ctx.producer.enqueue({ actionId: 'capture', params: { n: 2 }, context: { journeyId: 'j1', profileId: 'p1' } });
    const result = await resultOf(jobId);
    expect(result).toMatchObject({ outcome: 'delivered', status: '201', attempts: '1', actionId: 'capture' });
    expect(JSON.parse(result.response ?? '')).toEqual({ messageId: 'm-1', segments: 2 });
    expect(JSON.parse(result.context ?? '')).toEqual({ journeyId: 'j1', profileId: 'p1' });
    const res = await api.inject({ method: 'GET', url: `/v1/jobs/${jobId}` });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({
      jobId,
      actionId: 'capture',
      state: 'delivered',
      attempts: 1,
      result: { status: 201, response: { messageId: 'm-1', segments: 2 } },
    });
    expect(receiver.requests[0]?.headers['idempotency-key']).toBe(jobId);
  });

  it('enqueues one job for an idempotency key given twice, and delivers it once', async () => {
    await ctx.store.put(action('idem'));
    const first = await ctx.producer.enqueue({ actionId: 'idem', params: { n: 3 }, idempotencyKey: 'order-42-shipped' });
    const second = await ctx.producer.enqueue({ actionId: 'idem', params: { n: 3 }, idempotencyKey: 'order-42-shipped' });
    expect(first.deduplicated).toBe(false);
    expect(second).toEqual({ jobId: first.jobId, deduplicated: true });
    await resultOf(first.jobId);
    await new Promise((r) => setTimeout(r, 200));
    const hits = receiver.requests.filter((r) => r.url.startsWith('/idem'));
    expect(hits).toHaveLength(1);
    expect(hits[0]?.headers['idempotency-key']).toBe('order-42-shipped');
    const after = await ctx.producer.enqueue({ actionId: 'idem', params: { n: 3 }, idempotencyKey: 'order-42-shipped' });
    expect(after).toEqual({ jobId: first.jobId, deduplicated: true });
  });

  it('lets a running worker see an action update within one second', async () => {
    await ctx.store.put(
      action('update', { endpoint: { url: receiver.url, path: '/update', method: 'POST', headers: { 'X-Version': 'one' } } }),
    );
    const a = await ctx.producer.enqueue({ actionId: 'update', params: { n: 1 } });
    await resultOf(a.jobId);
    expect(receiver.requests.at(-1)?.headers['x-version']).toBe('one');
    await ctx.store.put(
      action('update', { endpoint: { url: receiver.url, path: '/update', method: 'POST', headers: { 'X-Version': 'two' } } }),
    );
    const changedAt = Date.now();
    // Poll with fresh jobs until the worker uses the new version.
    const seen = await waitFor(
      async () => {
        const { jobId } = await ctx.producer.enqueue({ actionId: 'update', params: { n: 2 } });
        await resultOf(jobId);
        return receiver.requests.at(-1)?.headers['x-version'] === 'two' ? Date.now() : undefined;
      },
      5000,
      'the new version',
    );
    expect(seen - changedAt).toBeLessThan(1000);
  });

  it('retries 500, 500 and delivers on the third attempt', async () => {
    await ctx.store.put(action('flaky'));
    let n = 0;
    receiver.handler = (_r, res) => res.writeHead(++n <= 2 ? 500 : 200).end('{}');
    const { jobId } = await ctx.producer.enqueue({ actionId: 'flaky', params: { n: 1 } });
    const result = await resultOf(jobId);
    expect(result).toMatchObject({ outcome: 'delivered', attempts: '3', status: '200' });
    expect(receiver.requests.map((r) => r.headers['idempotency-key'])).toEqual([jobId, jobId, jobId]);
  });

  it('dead-letters a 404 after one attempt with the attempt recorded', async () => {
    await ctx.store.put(action('missing'));
    receiver.handler = (_r, res) => res.writeHead(404, { 'content-type': 'text/plain' }).end('no such thing');
    const { jobId } = await ctx.producer.enqueue({ actionId: 'missing', params: { n: 1 } });
    const result = await resultOf(jobId);
    expect(result).toMatchObject({ outcome: 'dead', attempts: '1', status: '404', reason: 'http_status' });
    const rec = JSON.parse((await ctx.redis.hget(ctx.keys.dlqRecords, jobId)) ?? '{}');
    expect(rec.attempts).toHaveLength(1);
    expect(rec.attempts[0].response).toMatchObject({ status: 404, body: 'no such thing' });
    const res = await api.inject({ method: 'GET', url: `/v1/jobs/${jobId}` });
    expect(res.json()).toMatchObject({ state: 'dead', attempts: 1, error: { reason: 'http_status', status: 404 } });
  });

  it('fails the attempt on a garbage or oversized body without stopping the worker', async () => {
    await ctx.store.put(action('garbage', { response: { fields: { id: { type: 'string' } } } }));
    receiver.handler = (_r, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{not json');
    const g = await ctx.producer.enqueue({ actionId: 'garbage', params: { n: 1 } });
    expect(await resultOf(g.jobId)).toMatchObject({ outcome: 'dead', reason: 'response_invalid' });

    receiver.handler = (_r, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(`{"id":"${'x'.repeat(200_000)}"}`);
    const big = await ctx.producer.enqueue({ actionId: 'garbage', params: { n: 2 } });
    expect(await resultOf(big.jobId)).toMatchObject({ outcome: 'dead', reason: 'response_invalid' });

    receiver.handler = (_r, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"id":7}');
    const wrongType = await ctx.producer.enqueue({ actionId: 'garbage', params: { n: 3 } });
    expect(await resultOf(wrongType.jobId)).toMatchObject({ outcome: 'dead', reason: 'response_invalid' });

    receiver.handler = (_r, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"id":"fine"}');
    const ok = await ctx.producer.enqueue({ actionId: 'garbage', params: { n: 4 } });
    expect(JSON.parse((await resultOf(ok.jobId)).response ?? '')).toEqual({ id: 'fine' });
    expect(delivery.worker.isRunning()).toBe(true);
  });

  it('waits at least the Retry-After of a 429 before the next attempt', async () => {
    await ctx.store.put(action('busy', { retry: { maxAttempts: 3, backoff: { type: 'fixed', delayMs: 10, maxDelayMs: 10_000 } } }));
    let n = 0;
    receiver.handler = (_r, res) => (++n === 1 ? res.writeHead(429, { 'retry-after': '2' }).end() : res.writeHead(200).end('{}'));
    const { jobId } = await ctx.producer.enqueue({ actionId: 'busy', params: { n: 1 } });
    expect(await resultOf(jobId)).toMatchObject({ outcome: 'delivered', attempts: '2' });
    const [first, second] = receiver.requests.filter((r) => r.url === '/busy');
    expect((second?.at ?? 0) - (first?.at ?? 0)).toBeGreaterThanOrEqual(2000);
  });

  it('retries a timeout and dead-letters after maxAttempts with every attempt recorded', async () => {
    await ctx.store.put(action('slow', { endpoint: { url: receiver.url, path: '/slow', method: 'POST', timeoutMs: 1000 } }));
    // undici checks its timeouts on a ~1 s tick: answer well past it.
    receiver.handler = (_r, res) => setTimeout(() => res.writeHead(200).end('{}'), 4000);
    const { jobId } = await ctx.producer.enqueue({ actionId: 'slow', params: { n: 1 } });
    expect(await resultOf(jobId)).toMatchObject({ outcome: 'dead', attempts: '3', reason: 'timeout', status: '' });
    const rec = JSON.parse((await ctx.redis.hget(ctx.keys.dlqRecords, jobId)) ?? '{}');
    expect(rec.attempts.map((a: { attempt: number }) => a.attempt)).toEqual([1, 2, 3]);
    expect(rec.attempts[0].error.code).toBe('UND_ERR_HEADERS_TIMEOUT');
    const text = await workerCtx.metrics.registry.metrics();
    expect(text).toMatch(/action_relay_retries_total\{action="slow",reason="timeout"\} 2/);
  });

  it('dead-letters a job whose params no longer match a changed definition', async () => {
    await ctx.store.put(action('changed'));
    const { jobId } = await ctx.producer.enqueue({ actionId: 'changed', params: { n: 5 }, delayMs: 300 });
    await ctx.store.put(action('changed', { parameters: { n: { type: 'string' } }, body: { n: '{{params.n}}' } }));
    expect(await resultOf(jobId)).toMatchObject({ outcome: 'dead', reason: 'invalid_params', attempts: '1' });
  });
});

describe('HTTP API', () => {
  it('answers 400 naming every bad field of a malformed action', async () => {
    const res = await api.inject({
      method: 'PUT',
      url: '/v1/actions/bad',
      payload: { name: '', endpoint: { url: 'ftp://x', method: 'GET' }, body: { a: '{{params.nope}}' }, surprise: 1 },
    });
    expect(res.statusCode).toBe(400);
    const paths = (res.json().error.details as { path: string }[]).map((d) => d.path).sort();
    expect(paths).toEqual(['', 'endpoint.url', 'name'].sort());
    const res2 = await api.inject({
      method: 'PUT',
      url: '/v1/actions/bad2',
      payload: { name: 'x', endpoint: { url: 'http://127.0.0.1:1', method: 'GET' }, body: { a: '{{params.nope}}' } },
    });
    expect(res2.statusCode).toBe(400);
    expect((res2.json().error.details as { path: string }[]).map((d) => d.path).sort()).toEqual(['body', 'body.a']);
  });

  it('creates (201) then replaces (200) an action with growing versions', async () => {
    const a = await api.inject({ method: 'PUT', url: '/v1/actions/api_put', payload: action('api_put') });
    expect(a.statusCode).toBe(201);
    const b = await api.inject({ method: 'PUT', url: '/v1/actions/api_put', payload: action('api_put') });
    expect(b.statusCode).toBe(200);
    expect(b.json()).toEqual({ id: 'api_put', version: (a.json().version as number) + 1 });
    expect((await api.inject({ method: 'GET', url: '/v1/actions/api_put' })).json().definition.endpoint.timeoutMs).toBe(10_000);
    expect((await api.inject({ method: 'DELETE', url: '/v1/actions/api_put' })).statusCode).toBe(200);
    expect((await api.inject({ method: 'GET', url: '/v1/actions/api_put' })).statusCode).toBe(404);
  });

  it('answers 400 naming every bad field of a malformed job, and per item in a batch', async () => {
    await ctx.store.put(action('typed', { parameters: { n: { type: 'integer', required: true }, s: { type: 'string' } } }));
    const res = await api.inject({
      method: 'POST',
      url: '/v1/jobs',
      payload: { actionId: 'typed', params: { n: 'one', s: 2, extra: true } },
    });
    expect(res.statusCode).toBe(400);
    expect((res.json().error.details as { path: string }[]).map((d) => d.path).sort()).toEqual(['params.extra', 'params.n', 'params.s']);
    const batch = await api.inject({
      method: 'POST',
      url: '/v1/jobs/batch',
      payload: {
        jobs: [
          { actionId: 'typed', params: { n: 1 } },
          { actionId: 'nope', params: {} },
          { actionId: 'typed', params: {} },
        ],
      },
    });
    expect(batch.statusCode).toBe(202);
    const results = batch.json().results as Record<string, unknown>[];
    expect(results[0]).toHaveProperty('jobId');
    expect(results[1]).toMatchObject({ error: { details: [{ path: 'jobs[1].actionId' }] } });
    expect(results[2]).toMatchObject({ error: { details: [{ path: 'jobs[2].params.n', message: 'required' }] } });
    const garbage = await api.inject({
      method: 'POST',
      url: '/v1/jobs',
      headers: { 'content-type': 'application/json' },
      payload: '{oops',
    });
    expect(garbage.statusCode).toBe(400);
    expect(garbage.json().error.code).toBe('invalid_json');
  });

  it('previews with secrets masked and tests with one real request', async () => {
    await ctx.store.put(action('preview', { auth: { type: 'bearer', token: { env: 'ACTION_SECRET_T_BEARER' } } }));
    const p = await api.inject({ method: 'POST', url: '/v1/actions/preview/preview', payload: { params: { n: 9 } } });
    expect(p.statusCode).toBe(200);
    expect(p.json()).toMatchObject({ method: 'POST', url: `${receiver.url}/preview`, body: { n: 9 }, headers: { authorization: '***' } });
    expect(p.body).not.toContain('bearer-secret-123');
    const before = receiver.requests.length;
    receiver.handler = (_r, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    const t = await api.inject({ method: 'POST', url: '/v1/actions/preview/test', payload: { params: { n: 9 } } });
    expect(t.statusCode).toBe(200);
    expect(t.json()).toMatchObject({ response: { status: 200, body: { ok: true } } });
    expect(t.body).not.toContain('bearer-secret-123');
    expect(receiver.requests.slice(before).filter((r) => r.url === '/preview')).toHaveLength(1);
    expect(receiver.requests.at(-1)?.headers.authorization).toBe('Bearer bearer-secret-123');
  });

  it('exposes the first metrics on the worker registry', async () => {
    const text = await workerCtx.metrics.registry.metrics();
    expect(text).toMatch(/action_relay_http_requests_total\{action="auth_bearer",status_class="2xx"\} [1-9]/);
    expect(text).toMatch(/action_relay_jobs_total\{action="missing",outcome="dead"\} 1/);
    expect(text).toContain('action_relay_http_request_duration_seconds_bucket');
  });
});
