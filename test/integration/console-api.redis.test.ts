import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createApiServer } from '../../src/api/api-server.js';
import { CONSOLE_HEADER } from '../../src/api/admin-session.js';
import { tokenDigest } from '../../src/api/api-tokens.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import { createOutcomeWriter, type Outcome } from '../../src/queue/outcome-writer.js';
import { readActivity } from '../../src/queue/action-activity.js';
import type { Config } from '../../src/config/config.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import { removePrefixKeys, testConfig, testContext } from '../support/harness.js';

/* The console's server side through fastify's inject: sign-in, its data routes, and what its cookie opens. */
const TOKEN = 'console-api-token-0123456789';
const READER = 'console-api-reader-0123456789';
let tokensDir: string;
let config: Config;
let ctx: RelayContext;
let api: FastifyInstance;

beforeAll(async () => {
  tokensDir = await mkdtemp(join(tmpdir(), 'console-tokens-'));
  const tokensFile = join(tokensDir, 'tokens.yaml');
  await writeFile(tokensFile, `tokens:\n  - { name: reader, sha256: ${tokenDigest(READER)}, scopes: [read] }\n`);
  config = testConfig({ ADMIN_TOKEN: TOKEN, API_TOKENS_FILE: tokensFile });
  ctx = await testContext(config);
  api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
  await ctx.store.put({ id: 'sms', name: 'SMS', endpoint: { url: 'http://127.0.0.1:9/sms', method: 'POST' } });
  await ctx.store.put({
    id: 'crm',
    name: 'CRM',
    endpoint: { url: 'http://127.0.0.1:9/crm', method: 'POST' },
    rateLimit: { key: 'crm-key', max: 5, perMs: 1000 },
  });
});

afterAll(async () => {
  await api.close();
  await ctx.close();
  await removePrefixKeys(config);
  await rm(tokensDir, { recursive: true, force: true });
});

const bearer = { authorization: `Bearer ${TOKEN}` };

async function signIn(token = TOKEN): Promise<string> {
  const res = await api.inject({ method: 'POST', url: '/console/session', payload: { token } });
  expect(res.statusCode).toBe(204);
  const set = String(res.headers['set-cookie']);
  expect(set).toMatch(/^action_relay_admin=\d+\.[\w-]+\.[\w-]+; Path=\/; HttpOnly; SameSite=Strict; Max-Age=43200$/);
  // The cookie holds the token's name and a signature, never the token.
  expect(set).not.toContain(token);
  return set.split(';')[0] as string;
}

describe('console sign-in and session', () => {
  it('sends a browser without a session to the sign-in page, which needs no session', async () => {
    const page = await api.inject({ method: 'GET', url: '/console' });
    expect(page.statusCode).toBe(303);
    expect(page.headers.location).toBe('/console/login');
    const login = await api.inject({ method: 'GET', url: '/console/login' });
    expect(login.statusCode).toBe(200);
    expect(login.headers['content-type']).toContain('text/html');
    expect(login.headers['content-security-policy']).toContain("script-src 'self'");
    const script = /src="(\/console\/assets\/[^"]+\.js)"/.exec(login.body)?.[1];
    expect(script).toBeDefined();
    const asset = await api.inject({ method: 'GET', url: script as string });
    expect(asset.statusCode).toBe(200);
    expect(asset.headers['content-type']).toContain('text/javascript');
    expect(asset.headers['cache-control']).toContain('immutable');
  });

  it('refuses a wrong token, and a session for the right one opens the page, /v1 and /console/api', async () => {
    const wrong = await api.inject({ method: 'POST', url: '/console/session', payload: { token: `${TOKEN}x` } });
    expect(wrong.statusCode).toBe(401);
    expect(wrong.headers['set-cookie']).toBeUndefined();
    const cookie = await signIn();
    expect((await api.inject({ method: 'GET', url: '/console', headers: { cookie } })).statusCode).toBe(200);
    expect((await api.inject({ method: 'GET', url: '/v1/actions', headers: { cookie } })).statusCode).toBe(200);
    const session = await api.inject({ method: 'GET', url: '/console/api/session', headers: { cookie } });
    expect(session.json()).toEqual({ auth: 'token', scopes: ['enqueue', 'read', 'replay', 'admin'] });
    expect((await api.inject({ method: 'GET', url: '/console/api/session' })).statusCode).toBe(401);
  });

  it('gives a read token a session that sees but changes nothing, and not the queue board', async () => {
    const cookie = await signIn(READER);
    const headers = { cookie, [CONSOLE_HEADER]: '1' };
    expect((await api.inject({ method: 'GET', url: '/console', headers: { cookie } })).statusCode).toBe(200);
    expect((await api.inject({ method: 'GET', url: '/console/api/session', headers: { cookie } })).json()).toEqual({
      auth: 'token',
      scopes: ['read'],
    });
    expect((await api.inject({ method: 'GET', url: '/console/api/activity', headers: { cookie } })).statusCode).toBe(200);
    const validate = await api.inject({ method: 'POST', url: '/console/api/validate', headers, payload: { id: 'x' } });
    expect(validate.statusCode).toBe(200);
    const save = await api.inject({
      method: 'PUT',
      url: '/v1/actions/sms',
      headers,
      payload: { name: 'SMS changed', endpoint: { url: 'http://127.0.0.1:9/sms', method: 'POST' } },
    });
    expect(save.statusCode).toBe(403);
    expect(save.json().error.code).toBe('forbidden');
    expect((await ctx.store.get('sms'))?.definition.name).toBe('SMS');
    expect((await api.inject({ method: 'POST', url: '/v1/dlq/replay', headers, payload: { jobIds: ['x'] } })).statusCode).toBe(403);
    expect((await api.inject({ method: 'GET', url: '/admin/queues', headers: { cookie } })).statusCode).toBe(403);
  });

  it('accepts the cookie on a change only with the console header, which another origin cannot send without a preflight', async () => {
    const cookie = await signIn();
    const body = { name: 'Changed', endpoint: { url: 'http://127.0.0.1:9/x', method: 'POST' } };
    const bare = await api.inject({ method: 'PUT', url: '/v1/actions/forged', headers: { cookie }, payload: body });
    expect(bare.statusCode).toBe(401);
    expect(await ctx.store.get('forged')).toBeNull();
    const withHeader = await api.inject({
      method: 'PUT',
      url: '/v1/actions/forged',
      headers: { cookie, [CONSOLE_HEADER]: '1' },
      payload: body,
    });
    expect(withHeader.statusCode).toBe(201);
    await ctx.store.delete('forged');
  });

  it('signs out by expiring the cookie', async () => {
    const res = await api.inject({ method: 'DELETE', url: '/console/session' });
    expect(res.statusCode).toBe(204);
    expect(String(res.headers['set-cookie'])).toContain('action_relay_admin=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0');
  });
});

describe('console data routes', () => {
  it('validates a definition with the checks of a save, naming each field, and saves nothing', async () => {
    const bad = await api.inject({
      method: 'POST',
      url: '/console/api/validate',
      headers: bearer,
      payload: { id: 'draft', name: 'Draft', endpoint: { url: 'not a url', method: 'POST' }, body: { a: '{{params.nope}}' } },
    });
    expect(bad.statusCode).toBe(200);
    const answer = bad.json() as { valid: boolean; problems: { path: string; message: string }[] };
    expect(answer.valid).toBe(false);
    expect(answer.problems).toContainEqual({ path: 'endpoint.url', message: 'not a valid URL' });
    const good = await api.inject({
      method: 'POST',
      url: '/console/api/validate',
      headers: bearer,
      payload: { id: 'draft', name: 'Draft', endpoint: { url: 'http://127.0.0.1:9/d', method: 'POST' } },
    });
    expect(good.json()).toEqual({ valid: true, problems: [] });
    expect(await ctx.store.get('draft')).toBeNull();
    // The egress policy of a save applies too: loopback is refused without EGRESS_ALLOW_HOSTS.
    const strictConfig = testConfig({ ADMIN_TOKEN: TOKEN, EGRESS_ALLOW_HOSTS: '' });
    const strict = await testContext(strictConfig);
    const strictApi = await createApiServer({ ctx: strict, sender: createHttpSender({ guard: strict.egress }) });
    try {
      const refused = await strictApi.inject({
        method: 'POST',
        url: '/console/api/validate',
        headers: bearer,
        payload: { id: 'draft', name: 'Draft', endpoint: { url: 'http://127.0.0.1:9/d', method: 'POST' } },
      });
      expect((refused.json() as { problems: { path: string }[] }).problems.map((p) => p.path)).toEqual(['endpoint.url']);
    } finally {
      await strictApi.close();
      await strict.close();
      await removePrefixKeys(strictConfig);
    }
  });

  it('counts ended jobs per action over 15 minutes and an hour, with each key circuit state', async () => {
    let clock = Date.now();
    const writer = createOutcomeWriter(ctx.redis, 10_000, { now: () => clock });
    const ended = (jobId: string, actionId: string, outcome: 'delivered' | 'dead', attempts: number): Outcome => ({
      jobId,
      actionId,
      outcome,
      status: outcome === 'delivered' ? 200 : 404,
      reason: outcome === 'delivered' ? '' : 'http_status',
      attempts,
      durationMs: 1,
      context: {},
      response: {},
    });
    const keys = ctx.keys.partitions[0]!;
    // 30 minutes ago: in the hour, not in the 15 minutes.
    clock -= 30 * 60_000;
    await writer.finish(keys, ended('old-1', 'sms', 'delivered', 3));
    await writer.finish(keys, ended('old-2', 'sms', 'dead', 1));
    clock += 30 * 60_000;
    await writer.finish(keys, ended('new-1', 'sms', 'delivered', 1));
    await writer.finish(keys, ended('new-2', 'sms', 'delivered', 2));
    await writer.finish(keys, ended('new-3', 'crm', 'dead', 4));
    // An hour and more ago: in neither.
    clock -= 61 * 60_000;
    await writer.finish(keys, ended('ancient', 'crm', 'delivered', 1));
    clock += 61 * 60_000;

    expect(await readActivity(ctx.redis, ctx.keys.partitions, clock)).toEqual(
      new Map([
        ['sms', { last15m: { delivered: 2, dead: 0, retries: 1 }, lastHour: { delivered: 3, dead: 1, retries: 3 } }],
        ['crm', { last15m: { delivered: 0, dead: 1, retries: 3 }, lastHour: { delivered: 0, dead: 1, retries: 3 } }],
      ]),
    );
    // The counters expire on their own, after the hour they are read for.
    const ttl = await ctx.redis.ttl(keys.activity(Math.floor(clock / 60_000)));
    expect(ttl).toBeGreaterThan(3600);
    expect(ttl).toBeLessThanOrEqual(7200);

    await ctx.redis.hset(ctx.keys.circuit('crm-key'), 'state', 'open', 'openUntil', String(Date.now() + 60_000));
    const res = await api.inject({ method: 'GET', url: '/console/api/activity', headers: bearer });
    const items = (res.json() as { items: { id: string; circuit: string; limitKey: string; last15m: unknown; lastHour: unknown }[] }).items;
    expect(items.map((i) => [i.id, i.limitKey, i.circuit])).toEqual([
      ['crm', 'crm-key', 'open'],
      ['sms', '127.0.0.1:9', 'closed'],
    ]);
    expect(items[1]?.lastHour).toEqual({ delivered: 3, dead: 1, retries: 3 });
    await ctx.redis.hset(ctx.keys.circuit('crm-key'), 'openUntil', String(Date.now() - 1));
    const later = await api.inject({ method: 'GET', url: '/console/api/activity', headers: bearer });
    expect((later.json() as { items: { circuit: string }[] }).items[0]?.circuit).toBe('half-open');
  });

  it('answers the states of jobs, unknown ones included', async () => {
    const { jobId } = await ctx.producer.enqueue({ actionId: 'sms', params: {} });
    const res = await api.inject({
      method: 'POST',
      url: '/console/api/jobs',
      headers: bearer,
      payload: { jobIds: [jobId, 'no-such-job'] },
    });
    expect(res.json()).toEqual({
      items: [
        { jobId, actionId: 'sms', state: 'waiting', attempts: 0 },
        { jobId: 'no-such-job', state: 'unknown' },
      ],
    });
    const tooMany = await api.inject({ method: 'POST', url: '/console/api/jobs', headers: bearer, payload: { jobIds: [] } });
    expect(tooMany.statusCode).toBe(400);
  });
});
