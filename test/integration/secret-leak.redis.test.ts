import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createApiServer } from '../../src/api/api-server.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import type { Config } from '../../src/config/config.js';
import {
  readResults,
  removePrefixKeys,
  startReceiver,
  startTestWorker,
  testConfig,
  testContext,
  waitFor,
  type Receiver,
} from '../support/harness.js';

/**
 * One distinctive value per secret, planted in every auth type and in signing. The test runs
 * successes, retries, dead letters and a failing token endpoint through the worker and the API,
 * then searches every log line, the results stream, the dead-letter records and every API answer
 * for each value and for the encodings a value travels in (Basic's base64, a form or URL encoding).
 */
const CANARY = 'LeakCanary';
const SECRETS = {
  // Characters a JSON echo escapes: the escaped form must be masked too.
  ACTION_SECRET_LEAK_APIKEY_H: `${CANARY}-apikey"header/91f2\\`,
  // Characters a URL or a form encodes (space / + & = " \\ and non-ASCII): the encoded form must be masked too.
  ACTION_SECRET_LEAK_APIKEY_Q: `${CANARY}-apikey q/+&="\\é-83d1`,
  ACTION_SECRET_LEAK_BASIC: `${CANARY}-basic pass+&=/é-5a7c`,
  ACTION_SECRET_LEAK_BEARER: `${CANARY}-bearer-0b6e`,
  ACTION_SECRET_LEAK_OAUTH_SECRET: `${CANARY}-oauth client+secret&=/é-44aa`,
  ACTION_SECRET_LEAK_LOGIN_PASSWORD: `${CANARY}-login-password-c3c3`,
  ACTION_SECRET_LEAK_SIGNING: `whsec_${Buffer.from(`${CANARY}-signing-key-77e9`).toString('base64')}`,
};
/** Tokens the token endpoint hands out: secrets too, though no definition names them. */
const OAUTH_TOKEN = `${CANARY}-oauth-access-token-9d9d`;
const CUSTOM_TOKEN = `${CANARY}-custom-token-1e1e`;

function forms(value: string): string[] {
  const json = JSON.stringify(value).slice(1, -1);
  return [
    value,
    json,
    json.replaceAll('/', '\\/'),
    encodeURIComponent(value),
    new URLSearchParams({ v: value }).toString().slice(2),
    Buffer.from(value).toString('base64'),
    Buffer.from(`ada:${value}`).toString('base64'),
  ];
}
/** A secret of the relay's own environment, outside SECRETS_ENV_PREFIX: no definition may name it. */
const OWN_SECRET = `${CANARY}-relay-own-secret-2f2f`;
const NEEDLES = [...Object.values(SECRETS), OAUTH_TOKEN, CUSTOM_TOKEN, OWN_SECRET].flatMap(forms).concat([CANARY]);

let config: Config;
let ctx: RelayContext;
let worker: Awaited<ReturnType<typeof startTestWorker>>;
let receiver: Receiver;
let tokenEndpoint: Receiver;
let api: FastifyInstance;
const workerLog: string[] = [];
const apiLog: string[] = [];
const answers: string[] = [];
const env = { ...process.env, ...SECRETS, RELAY_OWN_SECRET: OWN_SECRET };

/** What the echoing receiver's answer holds of the credentials, captured from a 2xx and from an error alike. */
const ECHOED_FIELDS = {
  authorization: { type: 'string', path: 'headers.authorization' },
  apiKey: { type: 'string', path: 'headers.x-api-key' },
  url: { type: 'string' },
  sent: { type: 'string', path: 'body' },
};

/** Each auth type, on paths that decide the receiver's answer. */
function definitions(url: string, tokenUrl: string) {
  const base = (id: string, auth: unknown, extra: Record<string, unknown> = {}) => ({
    id,
    name: id,
    endpoint: { url, path: `/${id}/{{params.mode}}`, method: 'POST' },
    auth,
    parameters: { mode: { type: 'string', required: true } },
    body: { mode: '{{params.mode}}' },
    retry: { maxAttempts: 2, backoff: { type: 'fixed', delayMs: 10, maxDelayMs: 10 } },
    response: { fields: ECHOED_FIELDS },
    errorResponse: { fields: ECHOED_FIELDS },
    ...extra,
  });
  return [
    base('k_header', { type: 'apiKey', name: 'X-Api-Key', value: { env: 'ACTION_SECRET_LEAK_APIKEY_H' }, in: 'header' }),
    base('k_query', { type: 'apiKey', name: 'api_key', value: { env: 'ACTION_SECRET_LEAK_APIKEY_Q' }, in: 'query' }),
    base('basic', { type: 'basic', username: 'ada', password: { env: 'ACTION_SECRET_LEAK_BASIC' } }),
    base(
      'bearer',
      { type: 'bearer', token: { env: 'ACTION_SECRET_LEAK_BEARER' } },
      { signing: { secrets: [{ env: 'ACTION_SECRET_LEAK_SIGNING' }] } },
    ),
    base('oauth', {
      type: 'oauth2ClientCredentials',
      tokenUrl: `${tokenUrl}/oauth`,
      clientId: 'relay',
      clientSecret: { env: 'ACTION_SECRET_LEAK_OAUTH_SECRET' },
    }),
    base('custom', {
      type: 'customToken',
      request: {
        url: `${tokenUrl}/custom`,
        method: 'POST',
        body: { user: 'relay', password: { env: 'ACTION_SECRET_LEAK_LOGIN_PASSWORD' } },
      },
      tokenPath: 'token',
      inject: { as: 'query', name: 'token' },
    }),
    base('oauth_down', {
      type: 'oauth2ClientCredentials',
      tokenUrl: `${tokenUrl}/down`,
      clientId: 'relay',
      clientSecret: { env: 'ACTION_SECRET_LEAK_OAUTH_SECRET' },
    }),
  ];
}

async function call(method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: unknown) {
  const res = await api.inject({ method, url, ...(payload !== undefined ? { payload: payload as object } : {}) });
  answers.push(`${method} ${url} -> ${res.statusCode} ${JSON.stringify(res.headers)} ${res.body}`);
  return res;
}

beforeAll(async () => {
  receiver = await startReceiver();
  // A careless third party: echoes every credential it got into its answer's headers and body.
  receiver.handler = (r, res) => {
    const echo = JSON.stringify({ headers: r.headers, url: r.url, body: r.body });
    const mode = r.url.split('/')[2]?.split('?')[0];
    const status = mode === 'ok' ? 200 : mode === 'retry' ? 503 : 400;
    // "cut": a credential right at the 4 KiB edge of what a dead letter keeps, its head inside.
    const credential = String(r.headers['x-api-key'] ?? r.headers.authorization ?? new URL(r.url, 'http://x').search);
    const body = mode === 'cut' ? `${'p'.repeat(4096 - 12)}${credential}` : echo;
    res.writeHead(status, { 'content-type': 'application/json', 'x-echo': JSON.stringify(r.headers).slice(0, 2000) }).end(body);
  };
  tokenEndpoint = await startReceiver();
  tokenEndpoint.handler = (r, res) => {
    if (r.url === '/oauth') return res.writeHead(200).end(JSON.stringify({ access_token: OAUTH_TOKEN, expires_in: 3600 }));
    if (r.url === '/custom') return res.writeHead(200).end(JSON.stringify({ token: CUSTOM_TOKEN }));
    // A failing token endpoint that echoes what it was sent.
    res.writeHead(401).end(JSON.stringify({ error: 'invalid_client', got: r.headers.authorization, body: r.body }));
  };
  config = testConfig();
  ctx = await testContext(config, env, apiLog);
  worker = await startTestWorker(config, env, workerLog);
  api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
});

afterAll(async () => {
  await worker.stop();
  await api.close();
  await ctx.close();
  await receiver.close();
  await tokenEndpoint.close();
  await removePrefixKeys(config);
});

describe('secrets never leak', () => {
  it('finds no secret in logs, results, dead letters or API answers, across every auth type and path', async () => {
    const defs = definitions(receiver.url, tokenEndpoint.url);
    for (const d of defs) expect((await call('PUT', `/v1/actions/${d.id}`, d)).statusCode).toBe(201);
    // The relay's own environment is out of reach, whatever a token may save.
    const own = await call('PUT', '/v1/actions/own_env', {
      ...defs[3],
      id: 'own_env',
      auth: { type: 'bearer', token: { env: 'RELAY_OWN_SECRET' } },
      signing: { secrets: [{ file: '/proc/self/environ' }] },
    });
    expect(own.statusCode).toBe(400);
    expect(own.json().error.details.map((p: { path: string }) => p.path)).toEqual(['auth.token', 'signing.secrets[0]']);
    const jobIds: string[] = [];
    for (const d of defs) {
      for (const mode of ['ok', 'retry', 'reject', 'cut']) {
        const res = await call('POST', '/v1/jobs', { actionId: d.id, params: { mode } });
        jobIds.push((JSON.parse(res.body) as { jobId: string }).jobId);
      }
    }
    await waitFor(async () => (await ctx.redis.xlen(ctx.keys.results)) >= jobIds.length, 20_000, 'every outcome').catch(async (e) => {
      console.log(JSON.stringify(await readResults(ctx)), workerLog.slice(-10).join('\n'));
      throw e;
    });

    // The requests really carried the secrets: the search below would find them if they leaked.
    const sent = JSON.stringify(receiver.requests) + JSON.stringify(tokenEndpoint.requests);
    for (const v of [...Object.values(SECRETS).slice(0, 4), OAUTH_TOKEN, CUSTOM_TOKEN, SECRETS.ACTION_SECRET_LEAK_LOGIN_PASSWORD]) {
      expect(
        forms(v).some((f) => sent.includes(f)),
        v,
      ).toBe(true);
    }

    const results = await readResults(ctx);
    expect(results.filter((r) => r.outcome === 'dead').length).toBeGreaterThanOrEqual(defs.length * 2 - 2);
    expect(results.find((r) => r.actionId === 'oauth_down')).toMatchObject({ outcome: 'dead', reason: 'auth' });

    for (const d of defs) {
      await call('GET', `/v1/actions/${d.id}`);
      await call('POST', `/v1/actions/${d.id}/preview`, { params: { mode: 'ok' }, context: {} });
      await call('POST', `/v1/actions/${d.id}/test`, { params: { mode: 'reject' }, context: {} });
      await call('POST', `/v1/actions/${d.id}/test`, { params: { mode: 'ok' }, context: {} });
    }
    await call('GET', '/v1/actions');
    for (const id of jobIds) {
      await call('GET', `/v1/jobs/${id}`);
      await call('GET', `/v1/dlq/${id}`);
    }
    await call('GET', '/v1/dlq?limit=100');
    await call('GET', '/v1/stats');
    await call('GET', '/metrics');
    await call('POST', '/v1/dlq/replay', { filter: { actionId: 'basic' }, dryRun: true });

    const records = await Promise.all(jobIds.map((id) => ctx.deadLetters.get(id)));
    const haystacks = {
      'worker log': workerLog.join('\n'),
      'api log': apiLog.join('\n'),
      'results stream': JSON.stringify(results),
      'dead-letter records': JSON.stringify(records),
      'api answers': answers.join('\n'),
    };
    // The search can find things: the echoing receiver's answers were recorded (masked), and the
    // credentials it echoed were captured as response fields, masked too.
    expect(haystacks['dead-letter records']).toContain('x-echo');
    const captured = results.flatMap((r) => [r.response, r.errorResponse]).join('\n');
    expect(captured).toContain('"authorization":"Basic ***"');
    expect(captured).toContain('"apiKey":"***"');
    expect(workerLog.join('\n').length).toBeGreaterThan(1000);
    const found: string[] = [];
    for (const [where, text] of Object.entries(haystacks)) {
      for (const needle of NEEDLES) if (text.includes(needle)) found.push(`${needle} in ${where}`);
    }
    expect(found).toEqual([]);
  }, 60_000);
});
