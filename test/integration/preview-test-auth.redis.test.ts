import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createApiServer } from '../../src/api/api-server.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import type { Config } from '../../src/config/config.js';
import { makeCertificates } from '../support/certificates.js';
import { removePrefixKeys, startReceiver, testConfig, testContext, type Receiver } from '../support/harness.js';

/*
 * POST /v1/actions/:id/preview and /test for every auth type. Each secret is distinctive;
 * every answer is searched for it in the forms it travels in.
 */
const C = 'RvwCanary';
const SECRETS = {
  ACTION_SECRET_RV_APIKEY_H: `${C}-hdr-key-7a7a`,
  ACTION_SECRET_RV_APIKEY_Q: `${C}-q key/+&=é~(x)-8b8b`,
  ACTION_SECRET_RV_BASIC: `${C}-basic pass+/é-9c9c`,
  ACTION_SECRET_RV_BEARER: `${C}-bearer-0d0d`,
  ACTION_SECRET_RV_OAUTH: `${C}-oauth secret+&/é-1e1e`,
  ACTION_SECRET_RV_LOGIN: `${C}-login-pw-2f2f`,
  ACTION_SECRET_RV_SIGN: `whsec_${Buffer.from(`${C}-signing-key-3a3a`).toString('base64')}`,
};
const OAUTH_TOKEN = `${C}-oauth-token-4b4b`;
const CUSTOM_TOKEN = `${C}-custom token/+=-5c5c`;

function forms(value: string): string[] {
  const json = JSON.stringify(value).slice(1, -1);
  return [
    value,
    json,
    json.replaceAll('/', '\\/'),
    encodeURIComponent(value),
    new URLSearchParams({ v: value }).toString().slice(2),
    Buffer.from(value).toString('base64'),
  ];
}

let config: Config;
let ctx: RelayContext;
let api: FastifyInstance;
let echo: Receiver;
let tokens: Receiver;
let https: HttpsServer;
let httpsUrl = '';
let dir = '';
let clientKeyPem = '';
let signingKeyB64 = '';

/** makeCertificates, and a key file that is no key at all. */
function makeTlsFiles(d: string) {
  makeCertificates(d);
  writeFileSync(join(d, 'garbage.key'), 'this is not a PEM key at all\n');
}

const env = { ...process.env, ...SECRETS };

function def(id: string, auth: unknown, extra: Record<string, unknown> = {}) {
  return {
    id,
    name: id,
    endpoint: { url: echo.url, path: `/${id}`, method: 'POST', query: { q: 'a b~c' } },
    auth,
    body: { hello: 'world' },
    retry: { maxAttempts: 1 },
    ...extra,
  };
}

function definitions() {
  return [
    def('k_header', { type: 'apiKey', name: 'X-Api-Key', value: { env: 'ACTION_SECRET_RV_APIKEY_H' }, in: 'header' }),
    def('k_query', { type: 'apiKey', name: 'api_key', value: { env: 'ACTION_SECRET_RV_APIKEY_Q' }, in: 'query' }),
    def('basic', { type: 'basic', username: 'ada', password: { env: 'ACTION_SECRET_RV_BASIC' } }),
    def('bearer', { type: 'bearer', token: { env: 'ACTION_SECRET_RV_BEARER' } }),
    def('oauth', {
      type: 'oauth2ClientCredentials',
      tokenUrl: `${tokens.url}/oauth`,
      clientId: 'relay',
      clientSecret: { env: 'ACTION_SECRET_RV_OAUTH' },
    }),
    def('oauth_body', {
      type: 'oauth2ClientCredentials',
      tokenUrl: `${tokens.url}/oauth`,
      clientId: 'relay-body',
      clientSecret: { env: 'ACTION_SECRET_RV_OAUTH' },
      clientAuth: 'body',
    }),
    def('custom_q', {
      type: 'customToken',
      request: { url: `${tokens.url}/custom`, method: 'POST', body: { user: 'relay', password: { env: 'ACTION_SECRET_RV_LOGIN' } } },
      tokenPath: 'data.token',
      inject: { as: 'query', name: 'tok' },
    }),
    def('custom_h', {
      type: 'customToken',
      request: {
        url: `${tokens.url}/custom`,
        method: 'POST',
        bodyType: 'form',
        body: { user: 'relay-h', password: { env: 'ACTION_SECRET_RV_LOGIN' } },
      },
      tokenPath: 'data.token',
      inject: { as: 'header', name: 'X-Api-Token' },
    }),
    def('signed', { type: 'none' }, { signing: { secrets: [{ env: 'ACTION_SECRET_RV_SIGN' }] } }),
    {
      ...def('mtls', { type: 'none' }),
      endpoint: { url: httpsUrl, path: '/mtls', method: 'POST' },
      tls: { cert: { file: 'client.crt' }, key: { file: 'client.key' }, ca: { file: 'ca.crt' } },
    },
  ];
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'preview-mtls-'));
  makeTlsFiles(dir);
  clientKeyPem = readFileSync(join(dir, 'client.key'), 'utf8').trim();
  signingKeyB64 = SECRETS.ACTION_SECRET_RV_SIGN.slice('whsec_'.length);
  echo = await startReceiver();
  // A careless third party: echoes what it got.
  echo.handler = (r, res) =>
    res
      .writeHead(200, {
        'content-type': 'application/json',
        'x-echo-auth': String(r.headers.authorization ?? r.headers['x-api-key'] ?? ''),
      })
      .end(JSON.stringify({ headers: r.headers, url: r.url, body: r.body }));
  tokens = await startReceiver();
  tokens.handler = (r, res) => {
    if (r.url === '/oauth')
      return void res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ access_token: OAUTH_TOKEN, expires_in: 3600 }));
    if (r.url === '/custom')
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ data: { token: CUSTOM_TOKEN } }));
    res.writeHead(500).end('down');
  };
  https = createHttpsServer(
    {
      key: readFileSync(join(dir, 'server.key')),
      cert: readFileSync(join(dir, 'server.crt')),
      ca: readFileSync(join(dir, 'ca.crt')),
      requestCert: true,
      rejectUnauthorized: true,
    },
    (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () =>
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ url: req.url, headers: req.headers })),
      );
    },
  );
  await new Promise<void>((r) => https.listen(0, '127.0.0.1', () => r()));
  httpsUrl = `https://127.0.0.1:${(https.address() as { port: number }).port}`;
  config = testConfig({ SECRETS_DIR: dir });
  ctx = await testContext(config, env);
  api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
  for (const d of definitions()) {
    const res = await api.inject({ method: 'PUT', url: `/v1/actions/${d.id}`, payload: d });
    expect(res.statusCode, `${d.id}: ${res.body}`).toBeLessThan(300);
  }
});

afterAll(async () => {
  await api?.close();
  await ctx?.close();
  await echo?.close();
  await tokens?.close();
  if (https) {
    https.closeAllConnections();
    await new Promise<void>((r) => https.close(() => r()));
  }
  if (config) await removePrefixKeys(config);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const NEEDLES = () =>
  [...Object.values(SECRETS), OAUTH_TOKEN, CUSTOM_TOKEN, signingKeyB64, clientKeyPem.split('\n')[1] as string]
    .flatMap(forms)
    .concat([
      Buffer.from(`ada:${SECRETS.ACTION_SECRET_RV_BASIC}`).toString('base64'),
      Buffer.from(`relay:${encodeURIComponent(SECRETS.ACTION_SECRET_RV_OAUTH)}`).toString('base64'),
    ]);

describe('preview and test show no secret, for every auth type', () => {
  it('preview masks every credential and resolves nothing', async () => {
    const leaks: string[] = [];
    for (const d of definitions()) {
      const res = await api.inject({ method: 'POST', url: `/v1/actions/${d.id}/preview`, payload: { params: {}, context: {} } });
      expect(res.statusCode, `${d.id}: ${res.body}`).toBe(200);
      for (const n of NEEDLES()) if (res.body.includes(n)) leaks.push(`${d.id}: ${n}`);
      const body = res.json() as { url: string; headers: Record<string, string> };
      if (d.id === 'k_query') expect(body.url).toContain('api_key=***');
      if (d.id === 'custom_q') expect(body.url).toContain('tok=***');
      if (['basic', 'bearer', 'oauth', 'oauth_body'].includes(d.id)) expect(body.headers.authorization).toBe('***');
      if (d.id === 'k_header') expect(body.headers['x-api-key']).toBe('***');
      if (d.id === 'custom_h') expect(body.headers['x-api-token']).toBe('***');
    }
    expect(leaks).toEqual([]);
  });

  it('test sends the real request (a token fetched from the loopback endpoint) and shows no secret', async () => {
    const leaks: string[] = [];
    const before = echo.requests.length;
    for (const d of definitions()) {
      const res = await api.inject({ method: 'POST', url: `/v1/actions/${d.id}/test`, payload: { params: {}, context: {} } });
      expect(res.statusCode, `${d.id}: ${res.body}`).toBe(200);
      expect((res.json() as { response: { status: number } }).response.status).toBe(200);
      for (const n of NEEDLES()) if (res.body.includes(n)) leaks.push(`${d.id}: ${n} in ${res.body.slice(0, 300)}`);
    }
    // The requests really carried the credentials (so the search above could have found them).
    const sent = echo.requests.slice(before);
    expect(sent.find((r) => r.url.startsWith('/oauth?'))?.headers.authorization).toBe(`Bearer ${OAUTH_TOKEN}`);
    expect(sent.find((r) => r.url.startsWith('/custom_h?'))?.headers['x-api-token']).toBe(CUSTOM_TOKEN);
    expect(sent.find((r) => r.url.startsWith('/custom_q?'))?.url).toContain(`tok=${encodeURIComponent(CUSTOM_TOKEN)}`);
    expect(tokens.requests.filter((r) => r.url === '/oauth').length).toBeGreaterThanOrEqual(1);
    expect(leaks).toEqual([]);
  });

  it('a third party echoing the query re-encoded as a form (space as +) gets the apiKey and token masked too', async () => {
    const saved = echo.handler;
    echo.handler = (r, res) => {
      const q = new URL(r.url, 'http://x').searchParams.toString();
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ normalizedQuery: q }));
    };
    try {
      const leaks: string[] = [];
      for (const id of ['k_query', 'custom_q']) {
        const res = await api.inject({ method: 'POST', url: `/v1/actions/${id}/test`, payload: {} });
        expect(res.statusCode, res.body).toBe(200);
        for (const n of NEEDLES()) if (res.body.includes(n)) leaks.push(`${id}: ${n} in ${res.body}`);
      }
      expect(leaks).toEqual([]);
    } finally {
      echo.handler = saved;
    }
  });
});

describe('preview and test errors are clear 4xx answers naming the field', () => {
  const put = async (d: Record<string, unknown>) => {
    const res = await api.inject({ method: 'PUT', url: `/v1/actions/${d.id as string}`, payload: d });
    expect(res.statusCode, res.body).toBeLessThan(300);
  };
  const test = (id: string) => api.inject({ method: 'POST', url: `/v1/actions/${id}/test`, payload: {} });

  it('a secret that is not set: 400 naming the field, for every auth type', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [def('u_apikey', { type: 'apiKey', name: 'k', value: { env: 'ACTION_SECRET_RV_UNSET_1' }, in: 'query' }), 'auth.value'],
      [def('u_basic', { type: 'basic', username: 'u', password: { env: 'ACTION_SECRET_RV_UNSET_2' } }), 'auth.password'],
      [def('u_bearer', { type: 'bearer', token: { env: 'ACTION_SECRET_RV_UNSET_3' } }), 'auth.token'],
      [
        def('u_oauth', {
          type: 'oauth2ClientCredentials',
          tokenUrl: `${tokens.url}/oauth`,
          clientId: 'x',
          clientSecret: { env: 'ACTION_SECRET_RV_UNSET_4' },
        }),
        'auth.clientSecret',
      ],
      [
        def('u_custom', {
          type: 'customToken',
          request: { url: `${tokens.url}/custom`, method: 'POST', body: { pw: { env: 'ACTION_SECRET_RV_UNSET_5' } } },
          tokenPath: 'data.token',
          inject: { as: 'bearer' },
        }),
        'auth.request.body.pw',
      ],
      [def('u_sign', { type: 'none' }, { signing: { secrets: [{ env: 'ACTION_SECRET_RV_UNSET_6' }] } }), 'signing.secrets[0]'],
      [
        {
          ...def('u_tls', { type: 'none' }),
          endpoint: { url: httpsUrl, path: '/x', method: 'POST' },
          tls: { cert: { file: 'nope.crt' }, key: { file: 'client.key' } },
        },
        'tls.cert',
      ],
    ];
    const answers: string[] = [];
    for (const [d, field] of cases) {
      await put(d);
      const res = await test(d.id as string);
      answers.push(`${d.id as string} -> ${res.statusCode} ${res.body}`);
      expect.soft(res.statusCode, `${d.id as string}: ${res.body}`).toBe(400);
      expect.soft(res.body, `${d.id as string}`).toContain(field);
    }
  });

  it('an OAuth2 token endpoint that is down: a 4xx naming the token endpoint, never 500', async () => {
    // A port nobody listens on.
    const closed = await startReceiver();
    const url = closed.url;
    await closed.close();
    await put(
      def('down_oauth', {
        type: 'oauth2ClientCredentials',
        tokenUrl: `${url}/token`,
        clientId: 'x',
        clientSecret: { env: 'ACTION_SECRET_RV_OAUTH' },
      }),
    );
    const res = await test('down_oauth');
    expect(res.statusCode, res.body).toBeGreaterThanOrEqual(400);
    expect(res.statusCode, res.body).toBeLessThan(500);
    expect(res.body).toContain('token endpoint');
    for (const n of NEEDLES()) expect(res.body).not.toContain(n);
    // And one answering 500.
    await put(
      def('down_oauth5', {
        type: 'oauth2ClientCredentials',
        tokenUrl: `${tokens.url}/broken`,
        clientId: 'x',
        clientSecret: { env: 'ACTION_SECRET_RV_OAUTH' },
      }),
    );
    const res5 = await test('down_oauth5');
    expect(res5.statusCode, res5.body).toBeGreaterThanOrEqual(400);
    expect(res5.statusCode, res5.body).toBeLessThan(500);
  });

  it('an mTLS key that cannot be used: a 4xx naming tls.key (a definition fault, as the worker treats it), not a 5xx', async () => {
    await put({
      ...def('bad_tls', { type: 'none' }),
      endpoint: { url: httpsUrl, path: '/x', method: 'POST' },
      tls: { cert: { file: 'client.crt' }, key: { file: 'garbage.key' }, ca: { file: 'ca.crt' } },
    });
    const res = await test('bad_tls');
    expect(res.body).toContain('tls.key');
    expect(res.statusCode, res.body).toBe(400);
  });
});
