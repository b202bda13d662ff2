import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createApiServer } from '../../src/api/api-server.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import type { Config } from '../../src/config/config.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import { removePrefixKeys, testConfig, testContext } from '../support/harness.js';

/* Requests the API refuses before any job is made: each answers the documented error shape. */

const J = { 'content-type': 'application/json' };
let config: Config;
let ctx: RelayContext;
let api: FastifyInstance;

beforeAll(async () => {
  config = testConfig();
  ctx = await testContext(config);
  api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
  await ctx.store.put({ id: 'ok', name: 'ok', endpoint: { url: 'http://127.0.0.1:9', method: 'POST' }, body: {} });
});

afterAll(async () => {
  await api?.close();
  await ctx?.close();
  await removePrefixKeys(config);
});

describe('URLs fastify refuses before routing', () => {
  it.each([
    ['a malformed percent-encoding', '/v1/jobs/%zz'],
    ['an over-long path parameter', `/v1/jobs/${'a'.repeat(101)}`],
  ])('%s answers 4xx in the shape { error: { code, message } } with the security headers', async (_what, url) => {
    const res = await api.inject({ method: 'GET', url });
    expect(res.statusCode).toBeGreaterThanOrEqual(400);
    expect(res.statusCode).toBeLessThan(500);
    expect(res.json()).toMatchObject({ error: { code: expect.any(String), message: expect.any(String) } });
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.headers['x-frame-options']).toBe('DENY');
  });
});

describe('POST /v1/jobs/batch', () => {
  it('refuses an unknown top-level field (a batch-level delayMs) with a 400 naming it, and enqueues nothing', async () => {
    const res = await api.inject({
      method: 'POST',
      url: '/v1/jobs/batch',
      payload: JSON.stringify({ jobs: [{ actionId: 'ok', params: {} }], delayMs: 3_600_000 }),
      headers: J,
    });
    expect(res.statusCode, res.body).toBe(400);
    expect(res.json().error).toMatchObject({ code: 'validation_failed' });
    expect(res.json().error.details).toEqual([expect.objectContaining({ message: expect.stringContaining('delayMs') })]);
  });

  it('names jobs when it is missing ("required") or not a list ("expected a list of jobs")', async () => {
    for (const [payload, message] of [
      ['{}', 'required'],
      ['{"jobs":{"actionId":"ok"}}', 'expected a list of jobs'],
    ]) {
      const res = await api.inject({ method: 'POST', url: '/v1/jobs/batch', payload, headers: J });
      expect(res.statusCode).toBe(400);
      expect(res.json().error.details).toEqual([{ path: 'jobs', message }]);
    }
  });
});

describe('a body carrying "__proto__"', () => {
  it('answers 400 invalid_json saying the __proto__ key is refused, not "Body is not valid JSON"', async () => {
    const res = await api.inject({
      method: 'POST',
      url: '/v1/jobs',
      payload: '{"actionId":"ok","params":{"__proto__":{"x":1}}}',
      headers: J,
    });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.code).toBe('invalid_json');
    expect(res.json().error.message).toContain('__proto__');
  });

  it('a body that is not JSON still answers "not valid JSON"', async () => {
    const res = await api.inject({ method: 'POST', url: '/v1/jobs', payload: '{"actionId":', headers: J });
    expect(res.statusCode).toBe(400);
    expect(res.json().error).toMatchObject({ code: 'invalid_json', message: expect.stringContaining('not valid JSON') });
  });
});
