import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { assertSafeBind, createApiServer } from '../../src/api/api-server.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import { runApi } from '../../src/cli/run-api.js';
import type { Config } from '../../src/config/config.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import { removePrefixKeys, testConfig, testContext } from '../support/harness.js';

/*
 * Requests go through fastify's inject: nothing listens. The bind checks run before any listen,
 * and no test binds to anything but loopback.
 */
const TOKEN = 'admin-token-0123456789abcdef';
const run = promisify(execFile);

let config: Config;
let ctx: RelayContext;
let api: FastifyInstance;

beforeAll(async () => {
  config = testConfig({ ADMIN_TOKEN: TOKEN });
  ctx = await testContext(config);
  api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
  await ctx.store.put({ id: 'guarded', name: 'g', endpoint: { url: 'http://127.0.0.1:9', method: 'POST' } });
});

afterAll(async () => {
  await api.close();
  await ctx.close();
  await removePrefixKeys(config);
});

const bearer = (t: string) => ({ authorization: `Bearer ${t}` });
/** The token with its last character changed: same length, so only the comparison can refuse it. */
const SAME_LENGTH_WRONG = `${TOKEN.slice(0, -1)}${TOKEN.endsWith('x') ? 'y' : 'x'}`;

describe('with ADMIN_TOKEN set', () => {
  const protectedRoutes: [string, string, unknown?][] = [
    ['GET', '/v1/actions'],
    ['GET', '/v1/actions/guarded'],
    ['DELETE', '/v1/actions/guarded'],
    ['PUT', '/v1/actions/other', { name: 'o', endpoint: { url: 'http://127.0.0.1:9', method: 'POST' } }],
    ['POST', '/v1/actions/guarded/test', {}],
    ['POST', '/v1/jobs', { actionId: 'guarded' }],
    ['GET', '/v1/stats'],
    ['GET', '/v1/dlq'],
    ['POST', '/v1/dlq/purge', {}],
    ['GET', '/admin/queues'],
    ['GET', '/v1/no-such-route'],
  ];

  it.each(protectedRoutes)('%s %s needs the bearer token', async (method, url, payload) => {
    const send = (headers: Record<string, string>) =>
      api.inject({ method: method as 'GET', url, headers, ...(payload !== undefined ? { payload: payload as object } : {}) });
    const none = await send({});
    expect(none.statusCode).toBe(401);
    expect(none.json().error.code).toBe('unauthorized');
    expect((await send(bearer(SAME_LENGTH_WRONG))).statusCode).toBe(401);
  });

  it('refuses a wrong token of the same length, a shorter or longer one, other schemes and an empty one', async () => {
    expect(SAME_LENGTH_WRONG).toHaveLength(TOKEN.length);
    for (const authorization of [
      `Bearer ${SAME_LENGTH_WRONG}`,
      `Bearer ${TOKEN.slice(1)}`,
      `Bearer ${TOKEN}x`,
      `Bearer  ${TOKEN}`,
      `Basic ${Buffer.from(`admin:${TOKEN}`).toString('base64')}`,
      TOKEN,
      'Bearer ',
      `Bearer ${TOKEN.toUpperCase()}`,
    ]) {
      const res = await api.inject({ method: 'GET', url: '/v1/actions', headers: { authorization } });
      expect(res.statusCode, authorization).toBe(401);
    }
  });

  it('the right token opens /v1/* and /admin/*', async () => {
    expect((await api.inject({ method: 'GET', url: '/v1/actions', headers: bearer(TOKEN) })).statusCode).toBe(200);
    expect((await api.inject({ method: 'GET', url: '/v1/actions/guarded', headers: bearer(TOKEN) })).json().id).toBe('guarded');
    expect((await api.inject({ method: 'GET', url: '/admin/queues', headers: bearer(TOKEN) })).statusCode).toBe(200);
  });

  it('an unauthorized request changes nothing', async () => {
    const before = await ctx.queue.count();
    await api.inject({ method: 'POST', url: '/v1/jobs', payload: { actionId: 'guarded' } });
    await api.inject({ method: 'DELETE', url: '/v1/actions/guarded', headers: bearer(SAME_LENGTH_WRONG) });
    expect(await ctx.queue.count()).toBe(before);
    expect(await ctx.store.get('guarded')).not.toBeNull();
  });

  it('a percent-encoded or otherwise spelled path reaching a /v1 route still needs the token', async () => {
    for (const url of ['/%76%31/actions', '/v1/%61ctions', '/v1/actions?x=1', '/v1/actions/', '/v1/actions/%67uarded']) {
      const res = await api.inject({ method: 'GET', url });
      expect(res.statusCode, url).not.toBe(200);
      const authed = await api.inject({ method: 'GET', url, headers: bearer(TOKEN) });
      // Whatever fastify routes it to, only the token gets an answer from it.
      if (authed.statusCode === 200) expect(res.statusCode, url).toBe(401);
    }
  });

  it('/healthz, /readyz and /metrics answer without a token', async () => {
    for (const url of ['/healthz', '/readyz', '/metrics']) {
      expect((await api.inject({ method: 'GET', url })).statusCode, url).toBe(200);
    }
  });
});

describe('binding', () => {
  it.each(['0.0.0.0', '::', '192.168.1.20', '10.0.0.1', 'api.example.test', '127.evil.example', '0'])(
    'refuses HOST=%s without ADMIN_TOKEN',
    (host) => {
      expect(() => assertSafeBind(host, undefined)).toThrow(/ADMIN_TOKEN/);
    },
  );

  it.each(['127.0.0.1', '127.0.0.2', '::1', 'localhost', '::ffff:127.0.0.1'])('allows loopback HOST=%s without ADMIN_TOKEN', (host) => {
    expect(() => assertSafeBind(host, undefined)).not.toThrow();
  });

  it('allows any HOST with ADMIN_TOKEN', () => {
    expect(() => assertSafeBind('0.0.0.0', TOKEN)).not.toThrow();
  });

  it('runApi refuses HOST=0.0.0.0 without ADMIN_TOKEN before it listens or connects', async () => {
    await expect(runApi({ ...config, HOST: '0.0.0.0', ADMIN_TOKEN: undefined })).rejects.toThrow(/HOST=0\.0\.0\.0 is not loopback/);
  });

  it('`action-relay api` with HOST=0.0.0.0 and no ADMIN_TOKEN exits 1 with the reason', async () => {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      REDIS_URL: config.REDIS_URL,
      ACTION_RELAY_PREFIX: config.ACTION_RELAY_PREFIX,
      HOST: '0.0.0.0',
      PORT: '0',
    };
    delete env.ADMIN_TOKEN;
    const failed = await run(process.execPath, ['--import', 'tsx', 'workers/action-relay.ts', 'api'], { env, timeout: 20_000 }).then(
      () => null,
      (err: { code: number; stderr: string }) => err,
    );
    expect(failed?.code).toBe(1);
    expect(failed?.stderr).toMatch(/HOST=0\.0\.0\.0 is not loopback: set ADMIN_TOKEN/);
  });
});
