import { spawn, type ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config/config.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import { freePort } from '../../src/redis/embedded-redis.js';
import { readResults, removePrefixKeys, startReceiver, testConfig, testContext, waitFor, type Receiver } from '../support/harness.js';

const run = promisify(execFile);
const ENTRY = ['--import', 'tsx', 'workers/action-relay.ts'];

let config: Config;
let env: NodeJS.ProcessEnv;
let receiver: Receiver;
let ctx: RelayContext;
let worker: ChildProcess | undefined;
let metricsPort: number;

function cli(...args: string[]) {
  return run(process.execPath, [...ENTRY, ...args], { env, cwd: process.cwd() });
}

beforeAll(async () => {
  receiver = await startReceiver();
  config = testConfig();
  metricsPort = await freePort();
  env = {
    ...process.env,
    REDIS_URL: config.REDIS_URL,
    ACTION_RELAY_PREFIX: config.ACTION_RELAY_PREFIX,
    METRICS_PORT: String(metricsPort),
    LOG_LEVEL: 'info',
    ACTION_SECRET_E2E_TOKEN: 'e2e-token-value',
    // The receiver listens on loopback, which the egress guard refuses unless allowed.
    EGRESS_ALLOW_HOSTS: '127.0.0.1,localhost',
  };
  ctx = await testContext(config);
});

afterAll(async () => {
  worker?.kill('SIGTERM');
  if (worker && worker.exitCode === null) await new Promise((r) => worker?.once('exit', r));
  await ctx.close();
  await receiver.close();
  await removePrefixKeys(config);
});

describe('the action-relay CLI and a real worker process', () => {
  it('applies actions from a file, enqueues from the CLI and delivers through `action-relay worker`', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ar-e2e-'));
    writeFileSync(
      join(dir, 'notify.yaml'),
      [
        'id: notify',
        'name: Notify',
        'endpoint:',
        `  url: ${receiver.url}`,
        '  path: "/users/{{params.user}}/notify"',
        '  method: POST',
        'auth: { type: bearer, token: { env: ACTION_SECRET_E2E_TOKEN } }',
        'parameters:',
        '  user: { type: string, required: true }',
        '  count: { type: integer }',
        'body: { count: "{{params.count}}", journey: "{{context.journeyId}}" }',
        'response: { fields: { ok: { type: boolean } } }',
      ].join('\n'),
    );
    const applied = await cli('actions', 'apply', dir);
    expect(applied.stdout).toMatch(/created notify v1/);

    receiver.handler = (_r, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    worker = spawn(process.execPath, [...ENTRY, 'worker'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const logs: string[] = [];
    worker.stdout?.on('data', (d: Buffer) => logs.push(d.toString()));

    const enq = await cli(
      'enqueue',
      'notify',
      '--params',
      '{"user":"a b","count":3}',
      '--context',
      '{"journeyId":"j9"}',
      '--idempotency-key',
      'k-1',
    );
    const { jobId } = JSON.parse(enq.stdout) as { jobId: string };
    const result = await waitFor(async () => (await readResults(ctx)).find((r) => r.jobId === jobId), 60_000, 'delivery');
    expect(result).toMatchObject({ outcome: 'delivered', status: '200' });
    expect(JSON.parse(result.response ?? '')).toEqual({ ok: true });
    const req = receiver.requests[0];
    expect(req?.url).toBe('/users/a%20b/notify');
    expect(JSON.parse(req?.body ?? '')).toEqual({ count: 3, journey: 'j9' });
    expect(req?.headers.authorization).toBe('Bearer e2e-token-value');
    expect(req?.headers['idempotency-key']).toBe('k-1');

    const metrics = await fetch(`http://127.0.0.1:${metricsPort}/metrics`).then((r) => r.text());
    expect(metrics).toMatch(/action_relay_jobs_total\{action="notify",outcome="delivered"\} 1/);
    expect(metrics).toContain('process_cpu_seconds_total');
    await waitFor(() => logs.join('').includes('"msg":"delivered"'), 5000, 'the delivery log line');
    expect(logs.join('')).not.toContain('e2e-token-value');

    const bad = await cli('enqueue', 'notify', '--params', '{"count":"x"}').catch((e: { stderr: string; code: number }) => e);
    expect(bad).toMatchObject({ code: 2 });
    expect((bad as { stderr: string }).stderr).toMatch(/params\.user: required/);
    expect((bad as { stderr: string }).stderr).toMatch(/params\.count: expected an integer/);

    const list = await cli('actions', 'list');
    expect(list.stdout).toMatch(/^notify\tv1\tPOST /m);
    const stats = JSON.parse((await cli('stats', '--json')).stdout) as { queue: { delivered: number; dead: number } };
    expect(stats.queue).toMatchObject({ delivered: 1, dead: 0 });

    worker.kill('SIGTERM');
    const code = await new Promise((r) => worker?.once('exit', r));
    expect(code).toBe(0);
    // Seven CLI runs and a worker, each a Node process compiling TypeScript at start: tens of
    // seconds on a loaded machine. Every wait above is for a condition.
  }, 120_000);

  it('stops with a message naming a bad environment variable', async () => {
    const err = await run(process.execPath, [...ENTRY, 'stats'], { env: { ...env, PORT: 'eighty' } }).catch(
      (e: { stderr: string; code: number }) => e,
    );
    expect(err).toMatchObject({ code: 1 });
    expect((err as { stderr: string }).stderr).toMatch(/PORT/);
  });
});
