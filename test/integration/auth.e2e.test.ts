import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Webhook } from 'standardwebhooks';
import { describe, expect, it } from 'vitest';
import {
  WORKER_START_MS,
  readResults,
  setupRun,
  spawnWorker,
  startReceiver,
  startTestWorker,
  waitFor,
  type Receiver,
  trackRuns,
} from '../support/harness.js';
import { makeCertificates } from '../support/certificates.js';

const { children, cleanups } = trackRuns();

/** A token endpoint that hands out tok-1, tok-2, ... and records how it was asked. */
async function tokenEndpoint(opts: { delayMs?: number; body?: (n: number) => string; status?: number } = {}) {
  const ep = await startReceiver();
  let issued = 0;
  ep.handler = (_req, res) => {
    issued += 1;
    const n = issued;
    setTimeout(() => {
      if (opts.status) return res.writeHead(opts.status).end('{"error":"invalid_client"}');
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(opts.body ? opts.body(n) : JSON.stringify({ access_token: `tok-${n}`, expires_in: 3600 }));
    }, opts.delayMs ?? 0);
  };
  cleanups.push(() => ep.close());
  return ep;
}

/** The receiver accepts `Authorization: Bearer <valid()>` only. */
function acceptBearer(receiver: Receiver, valid: () => string) {
  receiver.handler = (req, res) =>
    req.headers.authorization === `Bearer ${valid()}` ? res.writeHead(200).end('{}') : res.writeHead(401).end('{"error":"bad token"}');
}

describe('oauth2 client credentials', () => {
  it('fetches one token for 500 jobs over 2 worker processes and sends it as a bearer', async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    const tokens = await tokenEndpoint({ delayMs: 150 });
    acceptBearer(receiver, () => 'tok-1');
    await ctx.store.put({
      id: 'crm',
      name: 'crm',
      endpoint: { url: receiver.url, path: '/contacts', method: 'POST' },
      auth: {
        type: 'oauth2ClientCredentials',
        tokenUrl: `${tokens.url}/oauth/token`,
        clientId: 'relay client',
        clientSecret: { env: 'ACTION_SECRET_CRM_CLIENT_SECRET' },
        scope: 'contacts:write',
        audience: 'https://crm.example/api',
      },
      body: { n: 1 },
    });
    const env = { ACTION_SECRET_CRM_CLIENT_SECRET: 's3cr3t:with/odd&chars' };
    spawnWorker(config, children, env);
    spawnWorker(config, children, env);
    await ctx.producer.enqueueMany(Array.from({ length: 500 }, () => ({ actionId: 'crm', params: {} })));
    await waitFor(async () => (await ctx.redis.xlen(ctx.keys.results)) >= 500, WORKER_START_MS + 30_000, '500 outcomes');
    const results = await readResults(ctx);
    expect(results.filter((r) => r.outcome === 'delivered')).toHaveLength(500);
    // One token request for both processes and 128 concurrent jobs.
    expect(tokens.requests).toHaveLength(1);
    const t = tokens.requests[0]!;
    expect(t.method).toBe('POST');
    expect(t.url).toBe('/oauth/token');
    expect(t.headers['content-type']).toBe('application/x-www-form-urlencoded');
    // RFC 6749 2.3.1: client id and secret form-encoded, then HTTP Basic.
    const basic = Buffer.from(`${encodeURIComponent('relay client')}:${encodeURIComponent(env.ACTION_SECRET_CRM_CLIENT_SECRET)}`).toString(
      'base64',
    );
    expect(t.headers.authorization).toBe(`Basic ${basic}`);
    const form = new URLSearchParams(t.body);
    expect(Object.fromEntries(form)).toEqual({
      grant_type: 'client_credentials',
      scope: 'contacts:write',
      audience: 'https://crm.example/api',
    });
    expect(receiver.requests.every((r) => r.headers.authorization === 'Bearer tok-1')).toBe(true);
  }, 120_000);

  it('answers a 401 with one fresh token and a delivered retry in the same attempt', async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    const tokens = await tokenEndpoint();
    let valid = 'tok-1';
    acceptBearer(receiver, () => valid);
    await ctx.store.put({
      id: 'rotating',
      name: 'rotating',
      endpoint: { url: receiver.url, method: 'POST' },
      auth: {
        type: 'oauth2ClientCredentials',
        tokenUrl: tokens.url,
        clientId: 'c',
        clientSecret: { env: 'ACTION_SECRET_ROT_SECRET' },
        clientAuth: 'body',
      },
      body: {},
      retry: { maxAttempts: 1 },
    });
    const worker = await startTestWorker(config, { ACTION_SECRET_ROT_SECRET: 'rotation-secret-1' });
    cleanups.push(() => worker.stop());
    await ctx.producer.enqueue({ actionId: 'rotating', params: {} });
    await waitFor(async () => (await ctx.redis.xlen(ctx.keys.results)) >= 1, 10_000, 'first outcome');
    // clientAuth: body puts the credentials in the form instead of a Basic header.
    expect(Object.fromEntries(new URLSearchParams(tokens.requests[0]!.body))).toMatchObject({
      client_id: 'c',
      client_secret: 'rotation-secret-1',
    });
    expect(tokens.requests[0]!.headers.authorization).toBeUndefined();

    valid = 'tok-2'; // the provider revoked tok-1 before it expired
    await ctx.producer.enqueue({ actionId: 'rotating', params: {} });
    await waitFor(async () => (await ctx.redis.xlen(ctx.keys.results)) >= 2, 10_000, 'second outcome');
    const results = await readResults(ctx);
    expect(results.map((r) => [r.outcome, r.attempts])).toEqual([
      ['delivered', '1'],
      ['delivered', '1'],
    ]);
    expect(tokens.requests).toHaveLength(2);
    expect(receiver.requests.map((r) => r.headers.authorization)).toEqual(['Bearer tok-1', 'Bearer tok-1', 'Bearer tok-2']);
  });

  it('dead-letters with reason auth when the token endpoint refuses the client, without leaking the secret', async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    const tokens = await tokenEndpoint({ status: 401 });
    await ctx.store.put({
      id: 'refused',
      name: 'refused',
      endpoint: { url: receiver.url, method: 'POST' },
      auth: { type: 'oauth2ClientCredentials', tokenUrl: tokens.url, clientId: 'c', clientSecret: { env: 'ACTION_SECRET_REFUSED_SECRET' } },
      body: {},
    });
    const worker = await startTestWorker(config, { ACTION_SECRET_REFUSED_SECRET: 'refused-secret-value' });
    cleanups.push(() => worker.stop());
    const { jobId } = await ctx.producer.enqueue({ actionId: 'refused', params: {} });
    await waitFor(async () => (await ctx.redis.xlen(ctx.keys.results)) >= 1, 10_000, 'outcome');
    const [result] = await readResults(ctx);
    expect(result).toMatchObject({ outcome: 'dead', reason: 'auth', attempts: '1' });
    expect(receiver.requests).toHaveLength(0);
    const record = await ctx.deadLetters.get(jobId);
    expect(record?.attempts[0]?.error?.message).toMatch(/token endpoint .* answered HTTP 401/);
    expect(JSON.stringify(record)).not.toContain('refused-secret-value');

    // A backlog behind a refused client does not become a login storm: the refusal is held for a while.
    await ctx.producer.enqueueMany(Array.from({ length: 30 }, () => ({ actionId: 'refused', params: {} })));
    await waitFor(async () => (await ctx.redis.xlen(ctx.keys.results)) >= 31, 10_000, '31 outcomes');
    expect((await readResults(ctx)).every((r) => r.reason === 'auth')).toBe(true);
    expect(tokens.requests).toHaveLength(1);
  });
});

describe('customToken', () => {
  it('posts a JSON body with a secret in it, reads the token and its lifetime at paths, injects it as a header', async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    const tokens = await tokenEndpoint({ body: (n) => JSON.stringify({ data: { token: `ct-${n}`, ttl: 600 } }) });
    receiver.handler = (req, res) => (req.headers['x-api-token'] === 'ct-1' ? res.writeHead(200).end('{}') : res.writeHead(401).end());
    await ctx.store.put({
      id: 'custom_json',
      name: 'custom json',
      endpoint: { url: receiver.url, method: 'POST' },
      auth: {
        type: 'customToken',
        request: {
          url: `${tokens.url}/login`,
          method: 'POST',
          headers: { 'X-Tenant': 'journeys', 'X-Login-Key': { env: 'ACTION_SECRET_LOGIN_KEY' } },
          body: { user: 'relay', password: { env: 'ACTION_SECRET_LOGIN_PASSWORD' } },
        },
        tokenPath: 'data.token',
        expiresInPath: 'data.ttl',
        inject: { as: 'header', name: 'X-Api-Token' },
      },
      body: {},
    });
    const worker = await startTestWorker(config, { ACTION_SECRET_LOGIN_PASSWORD: 'pw-of-relay', ACTION_SECRET_LOGIN_KEY: 'login-key-1' });
    cleanups.push(() => worker.stop());
    await ctx.producer.enqueueMany(Array.from({ length: 20 }, () => ({ actionId: 'custom_json', params: {} })));
    await waitFor(async () => (await ctx.redis.xlen(ctx.keys.results)) >= 20, 10_000, '20 outcomes');
    expect((await readResults(ctx)).every((r) => r.outcome === 'delivered')).toBe(true);
    expect(tokens.requests).toHaveLength(1);
    const t = tokens.requests[0]!;
    expect(t.url).toBe('/login');
    expect(t.headers['content-type']).toBe('application/json');
    expect(t.headers['x-tenant']).toBe('journeys');
    expect(t.headers['x-login-key']).toBe('login-key-1');
    expect(JSON.parse(t.body)).toEqual({ user: 'relay', password: 'pw-of-relay' });
    // The lifetime came from data.ttl: the shared entry expires in about 600 s less the margin.
    const keys = await ctx.redis.keys(`${ctx.keys.token('*')}`);
    const ttl = await ctx.redis.pttl(keys.find((k) => !k.endsWith(':lock'))!);
    expect(ttl).toBeGreaterThan(500_000);
    expect(ttl).toBeLessThanOrEqual(540_000);
  });

  it('GETs a token that is the whole answer and injects it as a query parameter; a form body is form-encoded', async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    const tokens = await tokenEndpoint({ body: (n) => `plain-token-${n}\n` });
    receiver.handler = (req, res) => (req.url.includes('sig=plain-token-1') ? res.writeHead(200).end('{}') : res.writeHead(401).end());
    await ctx.store.put({
      id: 'custom_get',
      name: 'custom get',
      endpoint: { url: receiver.url, path: '/p', method: 'POST', query: { a: 'b' } },
      auth: {
        type: 'customToken',
        request: { url: `${tokens.url}/token?app=relay`, method: 'GET' },
        tokenPath: '$response',
        cacheTtlMs: 60_000,
        inject: { as: 'query', name: 'sig' },
      },
      body: {},
    });
    await ctx.store.put({
      id: 'custom_form',
      name: 'custom form',
      endpoint: { url: receiver.url, path: '/f', method: 'POST' },
      auth: {
        type: 'customToken',
        request: {
          url: `${tokens.url}/form`,
          method: 'POST',
          bodyType: 'form',
          body: { user: 'u', pass: { env: 'ACTION_SECRET_FORM_PASS' } },
        },
        tokenPath: '$response',
        inject: { as: 'bearer' },
      },
      body: {},
    });
    const worker = await startTestWorker(config, { ACTION_SECRET_FORM_PASS: 'form-pass-value' });
    cleanups.push(() => worker.stop());
    await ctx.producer.enqueue({ actionId: 'custom_get', params: {} });
    await waitFor(async () => (await ctx.redis.xlen(ctx.keys.results)) >= 1, 10_000, 'outcome');
    expect(tokens.requests[0]).toMatchObject({ method: 'GET', url: '/token?app=relay', body: '' });
    expect(receiver.requests[0]?.url).toBe('/p?a=b&sig=plain-token-1');
    expect((await readResults(ctx))[0]).toMatchObject({ outcome: 'delivered' });

    await ctx.producer.enqueue({ actionId: 'custom_form', params: {} });
    await waitFor(() => tokens.requests.length >= 2, 10_000, 'form token request');
    expect(tokens.requests[1]?.headers['content-type']).toBe('application/x-www-form-urlencoded');
    expect(Object.fromEntries(new URLSearchParams(tokens.requests[1]!.body))).toEqual({ user: 'u', pass: 'form-pass-value' });
  });

  it('refuses an inject without a name, naming the field', async () => {
    const { ctx } = await setupRun(cleanups);
    await expect(
      ctx.store.put({
        id: 'bad_inject',
        name: 'bad',
        endpoint: { url: 'http://127.0.0.1:9/x', method: 'POST' },
        auth: { type: 'customToken', request: { url: 'http://127.0.0.1:9/t', method: 'GET' }, tokenPath: 't', inject: { as: 'header' } },
      }),
    ).rejects.toMatchObject({ problems: [expect.objectContaining({ path: 'auth.inject.name' })] });
  });
});

describe('outbound signing', () => {
  it('signs with both secrets during a rotation, verifiable by the Standard Webhooks library', async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    const oldSecret = `whsec_${Buffer.from('old-signing-key-0123456789abcdef').toString('base64')}`;
    const newSecret = `whsec_${Buffer.from('new-signing-key-0123456789abcdef').toString('base64')}`;
    await ctx.store.put({
      id: 'signed',
      name: 'signed',
      endpoint: { url: receiver.url, method: 'POST' },
      parameters: { text: { type: 'string' } },
      body: { text: '{{params.text}}', emoji: 'ünïcødé ✓' },
      signing: { secrets: [{ env: 'ACTION_SECRET_SIGN_OLD' }, { env: 'ACTION_SECRET_SIGN_NEW' }] },
    });
    const worker = await startTestWorker(config, { ACTION_SECRET_SIGN_OLD: oldSecret, ACTION_SECRET_SIGN_NEW: newSecret });
    cleanups.push(() => worker.stop());
    await ctx.producer.enqueue({ actionId: 'signed', params: { text: 'a "quoted" text' }, idempotencyKey: 'order-42' });
    await waitFor(() => receiver.requests.length >= 1, 10_000, 'signed request');
    const r = receiver.requests[0]!;
    expect(r.headers['webhook-id']).toBe('order-42');
    expect(Math.abs(Number(r.headers['webhook-timestamp']) - Date.now() / 1000)).toBeLessThan(30);
    expect(String(r.headers['webhook-signature']).split(' ')).toHaveLength(2);
    const headers = {
      'webhook-id': String(r.headers['webhook-id']),
      'webhook-timestamp': String(r.headers['webhook-timestamp']),
      'webhook-signature': String(r.headers['webhook-signature']),
    };
    // A receiver on either secret accepts the request; one on another secret does not.
    expect(new Webhook(oldSecret).verify(r.body, headers)).toEqual(JSON.parse(r.body));
    expect(new Webhook(newSecret).verify(r.body, headers)).toEqual(JSON.parse(r.body));
    const stranger = `whsec_${Buffer.from('some-other-key-0123456789abcdef!').toString('base64')}`;
    expect(() => new Webhook(stranger).verify(r.body, headers)).toThrow();
  });
});

describe('mTLS', () => {
  it('presents the client certificate to an HTTPS endpoint that requires one, trusting the private CA', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'relay-mtls-'));
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    const file = makeCertificates(dir);
    const seen: string[] = [];
    const server = createHttpsServer(
      {
        key: readFileSync(file('server.key')),
        cert: readFileSync(file('server.crt')),
        ca: readFileSync(file('ca.crt')),
        requestCert: true,
        rejectUnauthorized: true,
      },
      (req, res) => {
        const peer = (req.socket as TLSSocket).getPeerCertificate();
        seen.push(String(peer.subject?.CN));
        res.writeHead(200).end('{}');
      },
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    cleanups.push(() => new Promise((r) => server.close(() => r())));
    const port = (server.address() as { port: number }).port;

    // Read from SECRETS_DIR, by paths relative to it.
    const { config, ctx } = await setupRun(cleanups, { SECRETS_DIR: dir });
    await ctx.store.put({
      id: 'mtls',
      name: 'mtls',
      endpoint: { url: `https://127.0.0.1:${port}`, path: '/secure', method: 'POST' },
      tls: { cert: { file: 'client.crt' }, key: { file: 'client.key' }, ca: { file: file('ca.crt') } },
      body: {},
    });
    // Trusts the CA but has no client certificate: the server ends the handshake.
    await ctx.store.put({
      id: 'no_client_cert',
      name: 'no client cert',
      endpoint: { url: `https://127.0.0.1:${port}`, path: '/secure', method: 'POST' },
      tls: { ca: { file: file('ca.crt') } },
      body: {},
      retry: { maxAttempts: 1 },
    });
    // A key file that is not PEM: the relay's own misconfiguration, named, not a retried network fault.
    writeFileSync(join(dir, 'garbage.key'), 'not a key\n');
    await ctx.store.put({
      id: 'garbage_key',
      name: 'garbage key',
      endpoint: { url: `https://127.0.0.1:${port}`, path: '/secure', method: 'POST' },
      tls: { cert: { file: 'client.crt' }, key: { file: 'garbage.key' }, ca: { file: file('ca.crt') } },
      body: {},
    });
    const worker = await startTestWorker(config);
    cleanups.push(() => worker.stop());
    const garbage = (await ctx.producer.enqueue({ actionId: 'garbage_key', params: {} })).jobId;
    await ctx.producer.enqueue({ actionId: 'mtls', params: {} });
    await ctx.producer.enqueue({ actionId: 'no_client_cert', params: {} });
    await waitFor(async () => (await ctx.redis.xlen(ctx.keys.results)) >= 3, 15_000, 'three outcomes');
    const results = await readResults(ctx);
    expect(results.find((r) => r.actionId === 'mtls')).toMatchObject({ outcome: 'delivered', status: '200' });
    expect(results.find((r) => r.actionId === 'no_client_cert')).toMatchObject({ outcome: 'dead', reason: 'network' });
    expect(results.find((r) => r.actionId === 'garbage_key')).toMatchObject({ outcome: 'dead', reason: 'auth', attempts: '1' });
    expect((await ctx.deadLetters.get(garbage))?.attempts[0]?.error?.message).toMatch(/^tls\.key cannot be used: /);
    expect(seen).toEqual(['relay-client']);
  });
});

describe('broken secrets', () => {
  it('dead-letters a secret that cannot travel in a header with reason auth at once, not as a retried network error', async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    await ctx.store.put({
      id: 'broken_key',
      name: 'broken key',
      endpoint: { url: receiver.url, method: 'POST' },
      auth: { type: 'apiKey', name: 'X-Key', value: { env: 'ACTION_SECRET_BROKEN_KEY' }, in: 'header' },
      body: {},
    });
    const worker = await startTestWorker(config, { ACTION_SECRET_BROKEN_KEY: 'line-one\r\nX-Injected: 1' });
    cleanups.push(() => worker.stop());
    await ctx.producer.enqueue({ actionId: 'broken_key', params: {} });
    await waitFor(async () => (await ctx.redis.xlen(ctx.keys.results)) >= 1, 10_000, 'outcome');
    expect((await readResults(ctx))[0]).toMatchObject({ outcome: 'dead', reason: 'auth', attempts: '1' });
    expect(receiver.requests).toHaveLength(0);
  });
});
