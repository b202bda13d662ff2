import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createApiServer } from '../../src/api/api-server.js';
import { parseTokensFile, tokenDigest } from '../../src/api/api-tokens.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import type { Config } from '../../src/config/config.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import { removePrefixKeys, startReceiver, testConfig, testContext, type Receiver } from '../support/harness.js';

/*
 * Scoped tokens from an API_TOKENS_FILE, every route family against every scope, through fastify's
 * inject (nothing listens). One token per scope, plus the on-call token with two.
 */
const TOKENS = {
  enqueue: `enqueue-${randomUUID()}`,
  read: `read-${randomUUID()}`,
  replay: `replay-${randomUUID()}`,
  admin: `admin-${randomUUID()}`,
  oncall: `oncall-${randomUUID()}`,
};
type Who = keyof typeof TOKENS;

let dir: string;
let config: Config;
let ctx: RelayContext;
let api: FastifyInstance;
let receiver: Receiver;
const logLines: string[] = [];
const MISSING_JOB = randomUUID();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'relay-tokens-'));
  const file = join(dir, 'tokens.yaml');
  await writeFile(
    file,
    [
      'tokens:',
      `  - { name: journey-engine, sha256: ${tokenDigest(TOKENS.enqueue)}, scopes: [enqueue] }`,
      `  - { name: dashboards, sha256: ${tokenDigest(TOKENS.read)}, scopes: [read] }`,
      `  - { name: replayer, sha256: ${tokenDigest(TOKENS.replay)}, scopes: [replay] }`,
      `  - { name: admin-bot, sha256: ${tokenDigest(TOKENS.admin).toUpperCase()}, scopes: [admin] }`,
      `  - { name: oncall, sha256: ${tokenDigest(TOKENS.oncall)}, scopes: [read, replay] }`,
    ].join('\n'),
  );
  receiver = await startReceiver();
  config = testConfig({ API_TOKENS_FILE: file });
  ctx = await testContext(config, process.env, logLines);
  api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
  await ctx.store.put({ id: 'scoped', name: 's', endpoint: { url: receiver.url, method: 'POST' } });
});

afterAll(async () => {
  await api.close();
  await ctx.close();
  await receiver.close();
  await removePrefixKeys(config);
  await rm(dir, { recursive: true, force: true });
});

const call = (method: string, url: string, who?: Who, payload?: unknown) =>
  api.inject({
    method: method as 'GET',
    url,
    headers: who ? { authorization: `Bearer ${TOKENS[who]}` } : {},
    ...(payload !== undefined ? { payload: payload as object } : {}),
  });

/** Route families, each with the scopes that open it (admin opens all). */
const FAMILIES: { family: string; opens: Who[]; calls: [string, string, unknown?][] }[] = [
  {
    family: 'read actions',
    opens: ['read', 'admin'],
    calls: [
      ['GET', '/v1/actions'],
      ['GET', '/v1/actions/scoped'],
    ],
  },
  {
    family: 'save / delete actions',
    opens: ['admin'],
    calls: [
      ['PUT', '/v1/actions/scoped_new', { name: 'n', endpoint: { url: 'http://127.0.0.1:9', method: 'POST' } }],
      ['DELETE', '/v1/actions/never_defined'],
    ],
  },
  { family: 'preview', opens: ['read', 'admin'], calls: [['POST', '/v1/actions/scoped/preview', {}]] },
  { family: 'test (sends a request)', opens: ['admin'], calls: [['POST', '/v1/actions/scoped/test', {}]] },
  {
    family: 'enqueue',
    opens: ['enqueue', 'admin'],
    calls: [
      ['POST', '/v1/jobs', { actionId: 'scoped' }],
      ['POST', '/v1/jobs/batch', { jobs: [{ actionId: 'scoped' }] }],
    ],
  },
  { family: 'job status', opens: ['enqueue', 'read', 'admin'], calls: [['GET', `/v1/jobs/${MISSING_JOB}`]] },
  { family: 'stats', opens: ['read', 'admin'], calls: [['GET', '/v1/stats']] },
  {
    family: 'read dead letters',
    opens: ['read', 'admin'],
    calls: [
      ['GET', '/v1/dlq'],
      ['GET', `/v1/dlq/${MISSING_JOB}`],
    ],
  },
  { family: 'replay', opens: ['replay', 'admin'], calls: [['POST', '/v1/dlq/replay', { jobIds: [MISSING_JOB], dryRun: true }]] },
  {
    family: 'delete / purge dead letters',
    opens: ['admin'],
    calls: [
      ['DELETE', `/v1/dlq/${MISSING_JOB}`],
      ['POST', '/v1/dlq/purge', { jobIds: [MISSING_JOB] }],
    ],
  },
  { family: 'queue board', opens: ['admin'], calls: [['GET', '/admin/queues']] },
  // The console shows a read token everything; what it may change, the API routes decide.
  { family: 'console', opens: ['read', 'admin'], calls: [['GET', '/console']] },
];
const SCOPE_TOKENS: Who[] = ['enqueue', 'read', 'replay', 'admin'];

describe('scoped tokens', () => {
  const cases = FAMILIES.flatMap(({ family, opens, calls }) =>
    SCOPE_TOKENS.map((who) => ({ family, who, allowed: opens.includes(who), calls })),
  );

  it.each(cases)('$family with the $who scope: allowed $allowed', async ({ who, allowed, calls }) => {
    for (const [method, url, payload] of calls) {
      const res = await call(method, url, who, payload);
      if (allowed) {
        expect([401, 403], `${method} ${url}: ${res.body}`).not.toContain(res.statusCode);
        expect(res.statusCode, `${method} ${url}: ${res.body}`).toBeLessThan(500);
      } else {
        expect(res.statusCode, `${method} ${url}`).toBe(403);
        expect(res.json().error.code).toBe('forbidden');
        expect(res.json().error.message).toMatch(/needs the .*scope/);
      }
    }
  });

  it('a token with read and replay gets both, and nothing else', async () => {
    expect((await call('GET', '/v1/dlq', 'oncall')).statusCode).toBe(200);
    expect((await call('POST', '/v1/dlq/replay', 'oncall', { jobIds: [MISSING_JOB], dryRun: true })).statusCode).toBe(200);
    const purge = await call('POST', '/v1/dlq/purge', 'oncall', { jobIds: [MISSING_JOB] });
    expect(purge.statusCode).toBe(403);
    expect(purge.json().error.message).toContain('needs the admin scope');
    expect((await call('POST', '/v1/jobs', 'oncall', { actionId: 'scoped' })).statusCode).toBe(403);
  });

  it('names the scope a route needs', async () => {
    const res = await call('POST', '/v1/dlq/replay', 'read', { all: true });
    expect(res.json().error.message).toBe('POST /v1/dlq/replay needs the replay scope (or admin); token "dashboards" has read');
  });

  it('an unknown or missing token is 401 unauthorized, on every family', async () => {
    for (const { calls } of FAMILIES) {
      for (const [method, url, payload] of calls) {
        for (const headers of [
          {},
          { authorization: `Bearer ${TOKENS.admin}x` },
          { authorization: `Bearer ${tokenDigest(TOKENS.admin)}` },
        ]) {
          const res = await api.inject({ method: method as 'GET', url, headers, ...(payload ? { payload: payload as object } : {}) });
          if (url === '/console') {
            // A browser is sent to the console's sign-in page instead.
            expect(res.statusCode, `${method} ${url}`).toBe(303);
            expect(res.headers.location).toBe('/console/login');
            continue;
          }
          expect(res.statusCode, `${method} ${url}`).toBe(401);
          expect(res.json().error.code).toBe('unauthorized');
        }
      }
    }
  });

  it('a refused call changes nothing', async () => {
    const before = await ctx.queue.count();
    for (const who of ['read', 'replay'] as const) {
      expect((await call('POST', '/v1/jobs', who, { actionId: 'scoped' })).statusCode).toBe(403);
      expect((await call('DELETE', '/v1/actions/scoped', who)).statusCode).toBe(403);
    }
    expect(await ctx.queue.count()).toBe(before);
    expect(await ctx.store.get('scoped')).not.toBeNull();
  });

  it('the board takes an admin token once in the URL, then its cookie; not a token without admin', async () => {
    const refused = await api.inject({ method: 'GET', url: `/admin/queues?token=${TOKENS.read}` });
    expect(refused.statusCode).toBe(401);
    const login = await api.inject({ method: 'GET', url: `/admin/queues?token=${TOKENS.admin}` });
    expect(login.statusCode).toBe(303);
    const cookie = String(login.headers['set-cookie']).split(';')[0] as string;
    expect((await api.inject({ method: 'GET', url: '/admin/queues', headers: { cookie } })).statusCode).toBe(200);
    // The console's page reads the API with the cookie; a change also needs the console's header,
    // which another origin cannot send without a preflight.
    expect((await api.inject({ method: 'GET', url: '/v1/actions', headers: { cookie } })).statusCode).toBe(200);
    expect((await api.inject({ method: 'DELETE', url: '/v1/actions/scoped', headers: { cookie } })).statusCode).toBe(401);
    expect(await ctx.store.get('scoped')).not.toBeNull();
  });

  it('writes one audit line per change: token name, route, ids; never the token', async () => {
    const from = logLines.length;
    const def = { name: 'audited', endpoint: { url: 'http://127.0.0.1:9', method: 'POST' } };
    expect((await call('PUT', '/v1/actions/audited', 'admin', def)).statusCode).toBe(201);
    expect((await call('DELETE', '/v1/actions/audited', 'admin')).statusCode).toBe(200);
    expect((await call('POST', '/v1/actions/scoped/test', 'admin', {})).statusCode).toBe(200);
    expect((await call('POST', '/v1/dlq/replay', 'oncall', { jobIds: [MISSING_JOB] })).statusCode).toBe(200);
    expect((await call('POST', '/v1/dlq/purge', 'admin', { filter: { actionId: 'audited' } })).statusCode).toBe(200);
    expect((await call('GET', '/v1/actions', 'admin')).statusCode).toBe(200);
    const lines = logLines.slice(from).map((l) => JSON.parse(l) as Record<string, unknown>);
    const audit = lines.filter((l) => l.msg === 'audit');
    expect(audit.map((l) => [l.tokenName, l.method, l.route, l.ids])).toEqual([
      ['admin-bot', 'PUT', '/v1/actions/:id', ['audited']],
      ['admin-bot', 'DELETE', '/v1/actions/:id', ['audited']],
      ['admin-bot', 'POST', '/v1/actions/:id/test', ['scoped']],
      ['oncall', 'POST', '/v1/dlq/replay', [MISSING_JOB]],
      ['admin-bot', 'POST', '/v1/dlq/purge', []],
    ]);
    expect(audit[3]).toMatchObject({ replayed: 0, resultIds: [] });
    expect(audit[4]).toMatchObject({ level: 30, filter: { actionId: 'audited' }, purged: 0, status: 200 });
    const text = logLines.join('\n');
    for (const t of Object.values(TOKENS)) expect(text).not.toContain(t);
  });
});

describe('the queue board', () => {
  it('an operation of the board is audited like an API change; a read is not', async () => {
    const from = logLines.length;
    const refused = await call('PUT', '/admin/queues/api/queues/nope/pause', 'read');
    expect(refused.statusCode).toBe(403);
    const res = await call('PUT', '/admin/queues/api/queues/nope/pause', 'admin');
    expect([401, 403]).not.toContain(res.statusCode);
    expect((await call('GET', '/admin/queues/api/queues', 'admin')).statusCode).toBe(200);
    const audit = logLines
      .slice(from)
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.msg === 'audit');
    expect(audit).toEqual([
      expect.objectContaining({ tokenName: 'admin-bot', method: 'PUT', route: '/admin/queues/api/queues/:queueName/pause', ids: ['nope'] }),
    ]);
  });
});

describe('API_TOKENS_FILE', () => {
  it.each([
    ['not: a token file', /tokens: required/],
    ['tokens: []', /tokens: .*at least 1|too small/i],
    [`tokens: [{ name: a, sha256: abc, scopes: [read] }]`, /tokens\[0\]\.sha256: the hex SHA-256/],
    [`tokens: [{ name: a, sha256: ${'a'.repeat(64)}, scopes: [write] }]`, /tokens\[0\]\.scopes\[0\]/],
    [`tokens: [{ name: a, sha256: ${'a'.repeat(64)}, scopes: [] }]`, /tokens\[0\]\.scopes/],
    [`tokens: [{ name: a, sha256: ${'a'.repeat(64)}, scopes: [read], token: plain }]`, /unknown field/],
    [
      `tokens: [{ name: a, sha256: ${'a'.repeat(64)}, scopes: [read] }, { name: a, sha256: ${'b'.repeat(64)}, scopes: [read] }]`,
      /tokens\[1\]\.name: the name "a" is used twice/,
    ],
    ['{ "tokens": [', /not YAML or JSON/],
  ])('refuses %s, naming API_TOKENS_FILE and the field', (text, message) => {
    expect(() => parseTokensFile(text)).toThrow(/^API_TOKENS_FILE: /);
    expect(() => parseTokensFile(text)).toThrow(message);
  });

  it('reads JSON as well as YAML', () => {
    const tokens = parseTokensFile(JSON.stringify({ tokens: [{ name: 'j', sha256: 'A'.repeat(64), scopes: ['enqueue'] }] }));
    expect(tokens).toEqual([{ name: 'j', sha256: 'a'.repeat(64), scopes: ['enqueue'] }]);
  });

  it('a missing file stops the API with a message naming the variable', async () => {
    const cfg = testConfig({ API_TOKENS_FILE: join(dir, 'absent.yaml') });
    await expect(createApiServer({ ctx: { ...ctx, config: cfg }, sender: createHttpSender() })).rejects.toThrow(
      /API_TOKENS_FILE: .*absent\.yaml cannot be read \(ENOENT\)/,
    );
  });
});
