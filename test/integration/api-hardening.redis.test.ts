import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createApiServer } from '../../src/api/api-server.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import type { Config } from '../../src/config/config.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import type { DeadLetterRecord } from '../../src/queue/outcome-writer.js';
import { removePrefixKeys, testConfig, testContext } from '../support/harness.js';

/*
 * The no-token loopback mode against what a web page could send (a rebinding Host, a foreign
 * Origin, a form post), and the review's findings on the API surface. Requests go through inject:
 * the Host and Origin a browser would send are set by hand.
 */
let config: Config;
let ctx: RelayContext;
let api: FastifyInstance;
const logLines: string[] = [];

beforeAll(async () => {
  config = testConfig({ API_ALLOWED_HOSTS: 'relay.internal.test' });
  ctx = await testContext(config, process.env, logLines);
  api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
  await ctx.store.put({
    id: 'hard',
    name: 'h',
    endpoint: { url: 'http://127.0.0.1:9', path: '/x/{{params.p}}', method: 'POST' },
    parameters: { p: { type: 'string' }, n: { type: 'integer' } },
  });
});

afterAll(async () => {
  await api.close();
  await ctx.close();
  await removePrefixKeys(config);
});

const post = (url: string, payload: unknown, headers: Record<string, string> = {}) =>
  api.inject({ method: 'POST', url, payload: payload as object, headers });

/** Plants a dead letter directly, as the worker would leave one. */
async function plantDeadLetter(jobId: string): Promise<void> {
  const rec: DeadLetterRecord = {
    jobId,
    actionId: 'hard',
    job: { params: {}, context: {} },
    reason: 'http_status',
    status: 500,
    failedAt: new Date().toISOString(),
    attempts: [],
  } as unknown as DeadLetterRecord;
  const keys = ctx.queues.partitions[0]!.keys;
  await ctx.redis.hset(keys.dlqRecords, jobId, JSON.stringify(rec));
  await ctx.redis.zadd(keys.dlq, Date.now(), jobId);
}

describe('no-token mode: what a web page could send', () => {
  it.each([
    'evil.example',
    'evil.example:8080',
    '127.0.0.1.nip.io',
    'localhost.evil.example',
    '10.0.0.1',
    'evil.example@127.0.0.1',
    '127.0.0.1/x',
    'evil.example\\@localhost',
  ])('Host "%s" (DNS rebinding) is refused, even on open routes', async (host) => {
    for (const url of ['/v1/actions', '/admin/queues', '/metrics']) {
      const res = await api.inject({ method: 'GET', url, headers: { host } });
      expect(res.statusCode, `${host} ${url}`).toBe(421);
      expect(res.json().error.code).toBe('misdirected_request');
    }
  });

  it.each(['localhost', 'localhost:8123', '127.0.0.1:8123', '127.0.0.2', '[::1]:8123', 'LOCALHOST', 'relay.internal.test:80'])(
    'Host "%s" is answered',
    async (host) => {
      expect((await api.inject({ method: 'GET', url: '/v1/actions', headers: { host } })).statusCode).toBe(200);
    },
  );

  it('a foreign Origin is refused, the API’s own is not', async () => {
    const host = '127.0.0.1:8123';
    for (const origin of ['http://evil.example', 'null', 'http://127.0.0.1:9999', 'https://127.0.0.1:8123', 'http://localhost:8123']) {
      const res = await post('/v1/jobs', { actionId: 'hard' }, { host, origin });
      expect(res.statusCode, origin).toBe(403);
      expect(res.json().error.code).toBe('forbidden');
    }
    const own = await api.inject({ method: 'GET', url: '/v1/actions', headers: { host, origin: 'http://127.0.0.1:8123' } });
    expect(own.statusCode).toBe(200);
    expect(
      (await api.inject({ method: 'GET', url: '/v1/actions', headers: { host: 'localhost', origin: 'http://localhost' } })).statusCode,
    ).toBe(200);
  });

  it('a form post or a no-cors text/plain post is 415 and enqueues nothing', async () => {
    const before = await ctx.queue.count();
    const bodies: [string, string][] = [
      ['application/x-www-form-urlencoded', 'actionId=hard'],
      ['text/plain', '{"actionId":"hard"}'],
      ['multipart/form-data; boundary=x', '--x\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--x--'],
    ];
    for (const [type, body] of bodies) {
      const res = await api.inject({ method: 'POST', url: '/v1/jobs', payload: body, headers: { 'content-type': type } });
      expect(res.statusCode, type).toBe(415);
      expect(res.json().error.code).toBe('unsupported_media_type');
    }
    const none = await api.inject({ method: 'POST', url: '/v1/actions/hard/test' });
    expect(none.statusCode).toBe(415);
    const put = await api.inject({ method: 'PUT', url: '/v1/actions/other', payload: 'name=x', headers: { 'content-type': 'text/plain' } });
    expect(put.statusCode).toBe(415);
    expect(await ctx.store.get('other')).toBeNull();
    expect(await ctx.queue.count()).toBe(before);
    expect((await post('/v1/jobs', { actionId: 'hard' }, { 'content-type': 'application/json; charset=utf-8' })).statusCode).toBe(202);
  });
});

describe('replay and purge need an explicit selection', () => {
  it.each([
    ['/v1/dlq/replay', {}],
    ['/v1/dlq/replay', { filter: {} }],
    ['/v1/dlq/replay', { dryRun: false }],
    ['/v1/dlq/purge', {}],
    ['/v1/dlq/purge', { filter: {} }],
    ['/v1/dlq/purge', { filter: { actionId: undefined } }],
  ])('POST %s %j is a 400 and touches nothing', async (url, body) => {
    const id = crypto.randomUUID();
    await plantDeadLetter(id);
    const res = await post(url, body);
    expect(res.statusCode).toBe(400);
    expect(res.json().error.details[0].message).toBe('give jobIds, a filter with at least one field, or all: true');
    expect(await ctx.deadLetters.get(id)).not.toBeNull();
  });

  it('an empty body is a 400 too', async () => {
    const res = await api.inject({ method: 'POST', url: '/v1/dlq/purge', headers: { 'content-type': 'application/json' } });
    expect(res.statusCode).toBe(400);
  });

  it('all: true selects every dead letter', async () => {
    const id = crypto.randomUUID();
    await plantDeadLetter(id);
    const dry = await post('/v1/dlq/replay', { all: true, dryRun: true });
    expect(dry.json().jobIds).toContain(id);
    expect((await post('/v1/dlq/purge', { all: true })).json().purged).toBeGreaterThanOrEqual(1);
    expect(await ctx.deadLetters.get(id)).toBeNull();
  });
});

describe('job ids', () => {
  it.each(['meta', 'events', 'id', 'wait', 'stalled-check', '..', 'x'.repeat(90)])('GET /v1/jobs/%s is 404', async (id) => {
    const res = await api.inject({ method: 'GET', url: `/v1/jobs/${encodeURIComponent(id)}` });
    expect(res.statusCode).toBe(404);
    expect(res.json().error.code).toBe('not_found');
    expect((await api.inject({ method: 'GET', url: `/v1/dlq/${encodeURIComponent(id)}` })).statusCode).toBe(404);
  });

  it('the queue’s own hash is not read as a job', async () => {
    // BullMQ's meta hash exists once the queue was used: the old route answered it as a job.
    await post('/v1/jobs', { actionId: 'hard' });
    expect(await ctx.redis.exists(`${ctx.queue.qualifiedName}:meta`)).toBe(1);
    expect((await api.inject({ method: 'GET', url: '/v1/jobs/meta' })).statusCode).toBe(404);
  });
});

describe('bounded answers and bodies', () => {
  it('a 1 MB batch of bad jobs gets a small answer', async () => {
    const bad = Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`unknown_${i}`, 'x'.repeat(10)]));
    const jobs = Array.from({ length: 1000 }, () => ({ actionId: 'hard', params: { ...bad, n: 'not a number' } }));
    const payload = JSON.stringify({ jobs });
    expect(payload.length).toBeGreaterThan(1_000_000);
    const res = await api.inject({ method: 'POST', url: '/v1/jobs/batch', payload, headers: { 'content-type': 'application/json' } });
    expect(res.statusCode).toBe(202);
    const results = res.json().results as { error: { details: unknown[]; message: string } }[];
    expect(results).toHaveLength(1000);
    expect(results.every((r) => r.error.details.length <= 6)).toBe(true);
    expect(results[0]!.error.details.at(-1)).toEqual({ path: '', message: '56 more problem(s) not listed' });
    expect(results[999]!.error.message).toMatch(/61 problem\(s\), not listed/);
    expect(res.body.length).toBeLessThan(250_000);
  });

  it('one bad job lists at most 20 problems, each clipped', async () => {
    const params = Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`k${i}${'y'.repeat(400)}`, 1]));
    const res = await post('/v1/jobs', { actionId: 'hard', params });
    expect(res.statusCode).toBe(400);
    const details = res.json().error.details as { path: string; message: string }[];
    expect(details).toHaveLength(21);
    expect(details.every((d) => d.path.length <= 303)).toBe(true);
    expect(res.body.length).toBeLessThan(20_000);
  });

  it('JSON nested deeper than 64 levels is a 400, not a 500', async () => {
    for (const [url, payload] of [
      ['/v1/jobs', `{"actionId":"hard","params":{"p":${'['.repeat(100_000)}${']'.repeat(100_000)}}}`],
      ['/v1/jobs', `{"actionId":"hard","context":${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}}`],
      [
        '/v1/actions/deep',
        `{"name":"d","endpoint":{"url":"http://127.0.0.1:9","method":"POST"},"body":${'['.repeat(70)}${']'.repeat(70)}}`,
      ],
    ] as const) {
      const res = await api.inject({
        method: url.startsWith('/v1/actions') ? 'PUT' : 'POST',
        url,
        payload,
        headers: { 'content-type': 'application/json' },
      });
      expect(res.statusCode, url).toBe(400);
      expect(res.json().error).toMatchObject({ code: 'invalid_json', message: 'the JSON body is nested deeper than 64 levels' });
    }
    // Brackets inside strings are text, not nesting.
    expect((await post('/v1/jobs', { actionId: 'hard', params: { p: '['.repeat(500) } })).statusCode).toBe(202);
  });
});

describe('values a URL cannot carry: 400, never 500', () => {
  it('a path parameter "." or ".." is refused at enqueue, naming it', async () => {
    for (const p of ['.', '..']) {
      const res = await post('/v1/jobs', { actionId: 'hard', params: { p } });
      expect(res.statusCode).toBe(400);
      expect(res.json().error.details).toEqual([{ path: 'params.p', message: expect.stringContaining('"." or ".."') }]);
    }
    expect((await post('/v1/actions/hard/preview', { params: { p: '..' } })).statusCode).toBe(400);
  });

  it('a lone surrogate in a param or a context value is a 400 at enqueue, preview and test', async () => {
    const raw = (url: string, body: string) =>
      api.inject({ method: 'POST', url, payload: body, headers: { 'content-type': 'application/json' } });
    for (const url of ['/v1/jobs', '/v1/actions/hard/preview', '/v1/actions/hard/test']) {
      const body = url === '/v1/jobs' ? '{"actionId":"hard","params":{"p":"a\\ud800"}}' : '{"params":{"p":"a\\ud800"}}';
      const res = await raw(url, body);
      expect(res.statusCode, url).toBe(400);
      expect(res.json().error.details, url).toEqual([{ path: 'params.p', message: 'holds a lone UTF-16 surrogate' }]);
    }
    await ctx.store.put({
      id: 'ctx_path',
      name: 'c',
      endpoint: { url: 'http://127.0.0.1:9', path: '/u/{{context.profileId}}', method: 'POST' },
    });
    const preview = await raw('/v1/actions/ctx_path/preview', '{"context":{"profileId":"\\udc00"}}');
    expect(preview.statusCode).toBe(400);
    expect(preview.json().error.details[0].path).toBe('context.profileId');
  });
});

describe('headers and readiness', () => {
  it('every answer carries the security headers: API, board, docs, errors', async () => {
    for (const url of ['/v1/actions', '/admin/queues', '/docs/json', '/healthz', '/v1/nothing']) {
      const res = await api.inject({ method: 'GET', url });
      expect(res.headers['x-content-type-options'], url).toBe('nosniff');
      expect(res.headers['x-frame-options'], url).toBe('DENY');
      expect(res.headers['referrer-policy'], url).toBe('no-referrer');
      expect(String(res.headers['content-security-policy']), url).toContain("frame-ancestors 'none'");
    }
  });

  it('/readyz says "redis unavailable" without the driver’s text', async () => {
    const own = await testContext(config);
    const app = await createApiServer({ ctx: own, sender: createHttpSender({ guard: own.egress }) });
    try {
      own.redis.disconnect();
      const res = await app.inject({ method: 'GET', url: '/readyz' });
      expect(res.statusCode).toBe(503);
      // A short reason of its own (the connection's state), never the driver's text with hosts and ports.
      expect(res.json()).toEqual({
        error: { code: 'redis_unavailable', message: expect.stringMatching(/^redis unavailable: [a-z0-9 ]+$/) },
      });
      expect(res.body).not.toMatch(/127\.0\.0\.1|:\d{2,5}\b|ECONN/);
    } finally {
      await app.close();
      await own.close();
    }
  });
});
