import type { ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createApiServer } from '../../src/api/api-server.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import type { LookupAddress } from '../../src/delivery/egress-guard.js';
import type { Config } from '../../src/config/config.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import {
  kill,
  readResults,
  removePrefixKeys,
  spawnWorker,
  startReceiver,
  startTestWorker,
  testConfig,
  testContext,
  waitFor,
  type Receiver,
} from '../support/harness.js';

/*
 * Every destination here is a loopback receiver. Names are answered by injected lookups: the
 * one public address below is only ever answered when an action is saved, never connected to.
 */
const PUBLIC_AT_SAVE_TIME = '93.184.215.14';
const run = promisify(execFile);

/** DNS as the process sees it: a fixed table, ENOTFOUND for the rest. */
function lookupTable(table: Record<string, string>) {
  return async (host: string): Promise<LookupAddress[]> => {
    const address = table[host];
    if (address === undefined) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
    return [{ address, family: address.includes(':') ? 6 : 4 }];
  };
}

const port = (r: Receiver) => new URL(r.url).port;

function action(id: string, url: string, extra: Record<string, unknown> = {}) {
  return {
    id,
    name: id,
    endpoint: { url, method: 'POST' },
    body: { hello: 'world' },
    retry: { maxAttempts: 3, backoff: { type: 'fixed', delayMs: 10, maxDelayMs: 10 } },
    ...extra,
  };
}

describe('a worker whose egress policy does not allow loopback', () => {
  let receiver: Receiver;
  let target: Receiver;
  let saver: RelayContext;
  let strict: RelayContext;
  let strictConfig: Config;
  let worker: Awaited<ReturnType<typeof startTestWorker>>;
  let api: FastifyInstance;

  beforeAll(async () => {
    receiver = await startReceiver();
    target = await startReceiver();
    const allowing = testConfig();
    // Same deployment, policy without loopback: only the name partner.internal is allowed.
    strictConfig = { ...allowing, EGRESS_ALLOW_HOSTS: ['partner.internal'] };
    // Saving sees rebind.partner.test as public; the worker's connect-time lookup sees loopback.
    saver = await testContext(allowing, process.env, undefined, lookupTable({ 'rebind.partner.test': PUBLIC_AT_SAVE_TIME }));
    const workerDns = lookupTable({ 'rebind.partner.test': '127.0.0.1', 'partner.internal': '127.0.0.1' });
    worker = await startTestWorker(strictConfig, process.env, undefined, workerDns);
    strict = await testContext(strictConfig, process.env, undefined, workerDns);
    api = await createApiServer({ ctx: strict, sender: createHttpSender({ guard: strict.egress }) });
  });

  afterAll(async () => {
    await api.close();
    await worker.stop();
    await strict.close();
    await saver.close();
    await receiver.close();
    await target.close();
    await removePrefixKeys(strictConfig);
  });

  beforeEach(() => {
    receiver.requests.length = 0;
    target.requests.length = 0;
  });

  async function deadLetterOf(jobId: string) {
    const result = await waitFor(async () => (await readResults(saver)).find((r) => r.jobId === jobId), 15_000, `result of ${jobId}`);
    return { result, record: await saver.deadLetters.get(jobId) };
  }

  it('dead-letters a job to a loopback literal at once with reason blocked_destination; the receiver sees nothing', async () => {
    await saver.store.put(action('literal', `${receiver.url}/hook`));
    const { jobId } = await saver.producer.enqueue({ actionId: 'literal', params: {} });
    const { result, record } = await deadLetterOf(jobId);
    expect(result).toMatchObject({ outcome: 'dead', reason: 'blocked_destination', attempts: '1', status: '' });
    expect(record?.reason).toBe('blocked_destination');
    expect(record?.attempts).toHaveLength(1);
    expect(record?.attempts[0]?.error).toEqual({
      code: 'blocked_destination',
      message: expect.stringContaining('127.0.0.1 (loopback): refused by the egress policy'),
    });
    expect(receiver.requests).toHaveLength(0);
  });

  it('DNS rebinding: a name public when saved and loopback when connecting is refused at connect', async () => {
    await saver.store.put(action('rebind', `http://rebind.partner.test:${port(receiver)}/hook`));
    const { jobId } = await saver.producer.enqueue({ actionId: 'rebind', params: {} });
    const { result, record } = await deadLetterOf(jobId);
    expect(result).toMatchObject({ outcome: 'dead', reason: 'blocked_destination', attempts: '1' });
    expect(record?.attempts[0]?.error?.message).toContain('host "rebind.partner.test" resolves to 127.0.0.1 (loopback)');
    expect(receiver.requests).toHaveLength(0);
  });

  it('an allowed name reaches the address its lookup answered', async () => {
    await saver.store.put(action('named', `http://partner.internal:${port(receiver)}/hook`));
    const { jobId } = await saver.producer.enqueue({ actionId: 'named', params: {} });
    const result = await waitFor(async () => (await readResults(saver)).find((r) => r.jobId === jobId), 15_000, 'delivery');
    expect(result).toMatchObject({ outcome: 'delivered', status: '200' });
    expect(receiver.requests).toHaveLength(1);
    expect(receiver.requests[0]?.headers.host).toBe(`partner.internal:${port(receiver)}`);
  });

  it('does not follow a redirect, even to an allowed destination', async () => {
    receiver.handler = (_req, res) => res.writeHead(302, { location: `http://partner.internal:${port(target)}/stolen` }).end();
    try {
      await saver.store.put(action('redirect', `http://partner.internal:${port(receiver)}/hook`));
      const { jobId } = await saver.producer.enqueue({ actionId: 'redirect', params: {} });
      const { result } = await deadLetterOf(jobId);
      expect(result).toMatchObject({ outcome: 'dead', reason: 'http_status', status: '302' });
      expect(receiver.requests).toHaveLength(1);
      expect(target.requests).toHaveLength(0);
    } finally {
      receiver.handler = (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    }
  });

  it('POST /v1/actions/:id/test goes through the guard: 400 blocked_destination, nothing sent', async () => {
    await saver.store.put(action('try_literal', `${receiver.url}/hook`));
    const res = await api.inject({ method: 'POST', url: '/v1/actions/try_literal/test', payload: { params: {} } });
    expect(res.statusCode).toBe(400);
    expect(res.json().error).toMatchObject({ code: 'blocked_destination', message: expect.stringContaining('(loopback)') });
    expect(receiver.requests).toHaveLength(0);
  });

  it('PUT /v1/actions/:id refuses a forbidden destination naming the field, and saves a host that does not resolve', async () => {
    const put = (id: string, body: Record<string, unknown>) => api.inject({ method: 'PUT', url: `/v1/actions/${id}`, payload: body });
    const literal = await put('bad_literal', action('bad_literal', `${receiver.url}/hook`));
    expect(literal.statusCode).toBe(400);
    expect(literal.json().error.details).toEqual([
      { path: 'endpoint.url', message: expect.stringContaining('127.0.0.1 (loopback): refused by the egress policy') },
    ]);
    const meta = await put('bad_meta', action('bad_meta', 'http://[::ffff:169.254.169.254]/latest/meta-data'));
    expect(meta.json().error.details).toEqual([{ path: 'endpoint.url', message: expect.stringContaining('cloud metadata') }]);
    const resolved = await put('bad_rebind', action('bad_rebind', `http://rebind.partner.test:${port(receiver)}/`));
    // What a name resolves to stays out of the answer (the log has it).
    expect(resolved.json().error.details).toEqual([
      { path: 'endpoint.url', message: 'destination not allowed by the egress policy (EGRESS_ALLOW_HOSTS, EGRESS_ALLOW_PRIVATE)' },
    ]);
    expect(resolved.body).not.toContain('127.0.0.1');
    const token = await put(
      'bad_token',
      action('bad_token', `http://partner.internal:${port(receiver)}/`, {
        auth: {
          type: 'oauth2ClientCredentials',
          tokenUrl: 'http://10.0.0.1/token',
          clientId: 'c',
          clientSecret: { env: 'ACTION_SECRET_X' },
        },
      }),
    );
    expect(token.json().error.details).toEqual([{ path: 'auth.tokenUrl', message: expect.stringContaining('10.0.0.1 (private)') }]);
    expect((await put('later', action('later', 'https://not-yet.partner.test/hook'))).statusCode).toBe(201);
    for (const id of ['bad_literal', 'bad_meta', 'bad_rebind', 'bad_token']) expect(await strict.store.get(id)).toBeNull();
  });
});

describe('`action-relay` processes configured without loopback in EGRESS_ALLOW_HOSTS', () => {
  const children: ChildProcess[] = [];
  let receiver: Receiver;
  let config: Config;
  let ctx: RelayContext;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    receiver = await startReceiver();
    config = testConfig();
    ctx = await testContext(config);
    env = {
      ...process.env,
      REDIS_URL: config.REDIS_URL,
      ACTION_RELAY_PREFIX: config.ACTION_RELAY_PREFIX,
      LOG_LEVEL: 'silent',
      METRICS_PORT: '0',
      EGRESS_ALLOW_HOSTS: '',
      EGRESS_ALLOW_PRIVATE: 'false',
    };
  });

  afterEach(async () => {
    await Promise.all(children.splice(0).map((c) => kill(c, 'SIGTERM')));
  });

  afterAll(async () => {
    await ctx.close();
    await receiver.close();
    await removePrefixKeys(config);
  });

  it('`action-relay worker` dead-letters the job with blocked_destination and the receiver sees zero requests', async () => {
    await ctx.store.put(action('spawned', `${receiver.url}/hook`));
    const jobs = await ctx.producer.enqueueMany(Array.from({ length: 5 }, () => ({ actionId: 'spawned', params: {} })));
    spawnWorker(config, children, { EGRESS_ALLOW_HOSTS: '', EGRESS_ALLOW_PRIVATE: 'false' });
    const ids = jobs.map((j) => ('jobId' in j ? j.jobId : ''));
    const results = await waitFor(
      async () => {
        const all = (await readResults(ctx)).filter((r) => ids.includes(r.jobId ?? ''));
        return all.length === ids.length && all;
      },
      20_000,
      'five dead jobs',
    );
    for (const r of results) expect(r).toMatchObject({ outcome: 'dead', reason: 'blocked_destination', attempts: '1' });
    expect(receiver.requests).toHaveLength(0);
  });

  it('`actions apply` refuses the file with exit code 2, naming endpoint.url', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ar-egress-'));
    writeFileSync(
      join(dir, 'hook.yaml'),
      ['id: cli_hook', 'name: hook', 'endpoint:', `  url: ${receiver.url}/hook`, '  method: POST', ''].join('\n'),
    );
    const failed = await run(process.execPath, ['--import', 'tsx', 'workers/action-relay.ts', 'actions', 'apply', dir], { env }).then(
      () => null,
      (err: { code: number; stderr: string }) => err,
    );
    expect(failed?.code).toBe(2);
    expect(failed?.stderr).toMatch(/endpoint\.url: 127\.0\.0\.1 \(loopback\): refused by the egress policy/);
    expect(await ctx.store.get('cli_hook')).toBeNull();
  });

  it('an api started with ACTIONS_DIR holding such an action stops with exit code 2, naming endpoint.url', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ar-egress-dir-'));
    writeFileSync(
      join(dir, 'hook.yaml'),
      ['id: dir_hook', 'name: hook', 'endpoint:', `  url: ${receiver.url}/hook`, '  method: POST', ''].join('\n'),
    );
    const failed = await run(process.execPath, ['--import', 'tsx', 'workers/action-relay.ts', 'api'], {
      env: { ...env, ACTIONS_DIR: dir, PORT: '0' },
      timeout: 20_000,
    }).then(
      () => null,
      (err: { code: number; stderr: string }) => err,
    );
    expect(failed?.code).toBe(2);
    expect(failed?.stderr).toMatch(/endpoint\.url: 127\.0\.0\.1 \(loopback\): refused by the egress policy/);
    expect(await ctx.store.get('dir_hook')).toBeNull();
  });
});
