import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createApiServer } from '../../src/api/api-server.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import { parseActionDefinition } from '../../src/actions/compile-action.js';
import type { Config } from '../../src/config/config.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import { removePrefixKeys, startReceiver, testConfig, testContext, type Receiver } from '../support/harness.js';

/*
 * The attack of the security review: a token that may save actions names the relay's own secrets
 * ({ env: ADMIN_TOKEN }, { file: /proc/self/environ }) and has /test send them to its own server.
 * Every such reference is a 400 at save naming its field; one that slips past the save (a symlink
 * placed later, a definition stored before the rule) is refused again when it is used.
 */
const root = mkdtempSync(join(tmpdir(), 'relay-secret-refs-'));
const dir = join(root, 'secrets');
const OUTSIDE = 'relay-outside-secret-3c3c';
const OWN = 'relay-own-env-secret-4d4d';

let config: Config;
let ctx: RelayContext;
let api: FastifyInstance;
let receiver: Receiver;

beforeAll(async () => {
  mkdirSync(dir);
  writeFileSync(join(dir, 'bearer'), 'bearer-from-file-5e5e');
  writeFileSync(join(root, 'outside'), OUTSIDE);
  symlinkSync(join(root, 'outside'), join(dir, 'escape'));
  receiver = await startReceiver();
  config = testConfig({ SECRETS_DIR: dir, ADMIN_TOKEN: OWN });
  ctx = await testContext(config, { ACTION_SECRET_GOOD: 'good-env-secret-6f6f', RELAY_DB_PASSWORD: OWN, ACTION_SECRET_TINY: 'tiny' });
  api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
});

afterAll(async () => {
  await api.close();
  await ctx.close();
  await receiver.close();
  await removePrefixKeys(config);
  rmSync(root, { recursive: true, force: true });
});

const headers = { authorization: `Bearer ${OWN}` };
const action = (id: string, extra: Record<string, unknown>) => ({
  id,
  name: id,
  endpoint: { url: `${receiver.url}/hook`, method: 'POST' },
  body: {},
  ...extra,
});
const put = (def: { id: string }) => api.inject({ method: 'PUT', url: `/v1/actions/${def.id}`, payload: def, headers });
const test = (id: string) => api.inject({ method: 'POST', url: `/v1/actions/${id}/test`, payload: {}, headers });

describe('at save', () => {
  it.each([
    ['auth.token', { auth: { type: 'bearer', token: { env: 'ADMIN_TOKEN' } } }, /starting with ACTION_SECRET_/],
    ['auth.value', { auth: { type: 'apiKey', name: 'X-Key', in: 'header', value: { env: 'RELAY_DB_PASSWORD' } } }, /SECRETS_ENV_PREFIX/],
    ['auth.password', { auth: { type: 'basic', username: 'u', password: { file: '/proc/self/environ' } } }, /inside SECRETS_DIR/],
    [
      'auth.clientSecret',
      {
        auth: {
          type: 'oauth2ClientCredentials',
          tokenUrl: 'http://127.0.0.1:9/t',
          clientId: 'c',
          clientSecret: { file: '../outside' },
        },
      },
      /inside SECRETS_DIR/,
    ],
    [
      'auth.request.body.client_secret',
      {
        auth: {
          type: 'customToken',
          request: { url: 'http://127.0.0.1:9/t', method: 'POST', body: { client_id: 'c', client_secret: { file: '/proc/self/environ' } } },
          tokenPath: 'access_token',
          inject: { as: 'bearer' },
        },
      },
      /inside SECRETS_DIR/,
    ],
    [
      'auth.request.headers.X-Login',
      {
        auth: {
          type: 'customToken',
          request: { url: 'http://127.0.0.1:9/t', method: 'GET', headers: { 'X-Login': { env: 'REDIS_URL' } } },
          tokenPath: 'access_token',
          inject: { as: 'bearer' },
        },
      },
      /ACTION_SECRET_/,
    ],
    ['signing.secrets[1]', { signing: { secrets: [{ env: 'ACTION_SECRET_GOOD' }, { env: 'PATH' }] } }, /ACTION_SECRET_/],
    ['tls.key', { tls: { key: { file: 'escape' } } }, /inside SECRETS_DIR/],
  ])('refuses a reference outside the boundary at %s', async (field, extra, message) => {
    const id = `refused_${field.replace(/[^A-Za-z0-9]/g, '_')}`;
    const res = await put(action(id, extra));
    expect(res.statusCode, res.body).toBe(400);
    expect(res.json().error.details).toEqual([{ path: field, message: expect.stringMatching(message) }]);
    expect(await ctx.store.get(id)).toBeNull();
  });

  it('accepts references inside the boundary, and a file that does not exist yet', async () => {
    for (const [id, token] of [
      ['ok_env', { env: 'ACTION_SECRET_GOOD' }],
      ['ok_file', { file: 'bearer' }],
      ['ok_abs', { file: join(dir, 'bearer') }],
      ['ok_later', { file: 'later' }],
    ] as const) {
      expect((await put(action(id, { auth: { type: 'bearer', token } }))).statusCode).toBe(201);
    }
  });

  it('without SECRETS_DIR a file reference is refused', async () => {
    const bareConfig = testConfig();
    const bare = await testContext(bareConfig);
    try {
      await expect(bare.store.put(action('no_dir', { auth: { type: 'bearer', token: { file: 'bearer' } } }))).rejects.toThrow(
        /auth.token: file references need SECRETS_DIR/,
      );
    } finally {
      await bare.close();
      // Its queues wrote their meta keys under a prefix of their own.
      await removePrefixKeys(bareConfig);
    }
  });
});

describe('at use', () => {
  it('sends secrets from inside the boundary', async () => {
    for (const [id, value] of [
      ['ok_env', 'good-env-secret-6f6f'],
      ['ok_file', 'bearer-from-file-5e5e'],
    ]) {
      expect((await test(id as string)).statusCode).toBe(200);
      expect(receiver.requests.at(-1)?.headers.authorization).toBe(`Bearer ${value}`);
    }
  });

  it('a symlink placed after the save cannot lead outside: "secret auth.token is not available", nothing sent', async () => {
    const before = receiver.requests.length;
    const missing = await test('ok_later');
    expect(missing.json().error.message).toBe('secret auth.token is not available');
    symlinkSync(join(root, 'outside'), join(dir, 'later'));
    const escaped = await test('ok_later');
    expect(escaped.statusCode).toBe(400);
    expect(escaped.json().error).toMatchObject({ code: 'auth', message: 'secret auth.token is not available' });
    expect(receiver.requests.length).toBe(before);
    expect(escaped.body).not.toContain(OUTSIDE);
  });

  it('a definition stored before the rule is refused at use, not sent', async () => {
    // Parsed by the schema alone, as the store accepted it before SECRETS_ENV_PREFIX existed.
    const definition = parseActionDefinition(action('legacy', { auth: { type: 'bearer', token: { env: 'RELAY_DB_PASSWORD' } } }));
    const stored = { version: 1, updatedAt: Date.now(), definition };
    await ctx.redis.hset(ctx.keys.actions, 'legacy', JSON.stringify(stored));
    const before = receiver.requests.length;
    const res = await test('legacy');
    expect(res.json().error.message).toBe('secret auth.token is not available');
    expect(receiver.requests.length).toBe(before);
    expect(res.body).not.toContain(OWN);
  });

  it('a secret shorter than 8 characters is an auth error', async () => {
    expect((await put(action('tiny', { auth: { type: 'bearer', token: { env: 'ACTION_SECRET_TINY' } } }))).statusCode).toBe(201);
    const res = await test('tiny');
    expect(res.json().error).toMatchObject({
      code: 'auth',
      message: expect.stringMatching(/^secret auth.token is shorter than 8 characters/),
    });
  });
});
