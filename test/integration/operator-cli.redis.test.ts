import { execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/cli.js';
import { runApi } from '../../src/cli/run-api.js';
import { runWorker } from '../../src/cli/run-worker.js';
import type { Config } from '../../src/config/config.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import { getJobStatus } from '../../src/queue/job-status.js';
import {
  LOOPBACK_ALLOWED,
  readResults,
  removePrefixKeys,
  startReceiver,
  startTestWorker,
  testConfig,
  testContext,
  waitFor,
  type Receiver,
} from '../support/harness.js';

let config: Config;
let ctx: RelayContext;
let receiver: Receiver;
let env: NodeJS.ProcessEnv;
const tmp = mkdtempSync(join(tmpdir(), 'ar-operator-'));

/** Runs the CLI in this process with its output captured. */
async function cli(args: string[], opts: { env?: NodeJS.ProcessEnv; tty?: boolean } = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const raw: string[] = [];
  const code = await main(['node', 'action-relay', ...args], {
    out: (l) => out.push(l),
    err: (l) => err.push(l),
    errRaw: (t) => raw.push(t),
    stderrIsTty: opts.tty ?? false,
    env: opts.env ?? env,
  });
  return { code, out: out.join('\n'), err: err.join('\n'), raw: raw.join('') };
}

const run = promisify(execFile);

const versions = async () => Object.fromEntries((await ctx.store.list()).map((a) => [a.definition.id, a.version]));

function actionYaml(id: string, header: string): string {
  return [
    'id: ' + id,
    'name: ' + id,
    'endpoint:',
    `  url: ${receiver.url}/${id}`,
    '  method: POST',
    `  headers: { X-Fix: ${header} }`,
    '',
  ].join('\n');
}

/** An action whose body holds itself: a YAML alias inside its own anchor. */
function cyclicYaml(id: string): string {
  return [`id: ${id}`, `name: ${id}`, 'endpoint:', `  url: ${receiver.url}/${id}`, '  method: POST', 'body: &b { self: *b }', ''].join(
    '\n',
  );
}

/** An action whose body uses one anchor twice: an alias, but no cycle. */
function aliasYaml(id: string): string {
  return [
    `id: ${id}`,
    `name: ${id}`,
    'endpoint:',
    `  url: ${receiver.url}/${id}`,
    '  method: POST',
    'body:',
    '  billing: &address { city: Lyon }',
    '  shipping: *address',
    '',
  ].join('\n');
}

const CYCLE = /refers back to one of its own parents/;

beforeAll(async () => {
  receiver = await startReceiver();
  receiver.handler = (r, res) => res.writeHead(r.url.startsWith('/broken') ? 400 : 200, { 'content-type': 'application/json' }).end('{}');
  config = testConfig({ PORT: '0', SHUTDOWN_GRACE_MS: '1000' });
  env = {
    REDIS_URL: config.REDIS_URL,
    ACTION_RELAY_PREFIX: config.ACTION_RELAY_PREFIX,
    EGRESS_ALLOW_HOSTS: LOOPBACK_ALLOWED,
    LOG_LEVEL: 'silent',
    METRICS_PORT: '0',
    PORT: '0',
  };
  ctx = await testContext(config);
});

afterAll(async () => {
  await ctx.close();
  await receiver.close();
  await removePrefixKeys(config);
  rmSync(tmp, { recursive: true, force: true });
});

describe('ACTIONS_DIR: managed by files, never re-imposed', () => {
  it('an API edit survives api and worker restarts and every CLI read command; file-managed actions answer 409', async () => {
    mkdirSync(join(tmp, 'actions'));
    const file = join(tmp, 'actions', 'filed.yaml');
    writeFileSync(file, actionYaml('filed', 'one'));
    // A relative ACTIONS_DIR is resolved once, against the folder the api started in.
    const startDir = process.cwd();
    process.chdir(tmp);
    let api: Awaited<ReturnType<typeof runApi>>;
    try {
      api = await runApi({ ...config, ACTIONS_DIR: 'actions' });
    } finally {
      process.chdir(startDir);
    }
    await api.actionsApplied;
    expect(await ctx.store.get('filed')).toMatchObject({ version: 1, managedBy: file });

    const call = (method: string, url: string, body?: unknown) =>
      fetch(`${api.url}${url}`, {
        method,
        ...(body ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) } : {}),
      }).then(async (r) => ({ status: r.status, body: (await r.json()) as Record<string, unknown> }));

    const live = { name: 'live', endpoint: { url: `${receiver.url}/live`, method: 'POST', headers: { 'X-Fix': 'old' } } };
    expect((await call('PUT', '/v1/actions/live', live)).status).toBe(201);
    // The on-call fix, through the API.
    const fixed = await call('PUT', '/v1/actions/live', { ...live, endpoint: { ...live.endpoint, headers: { 'X-Fix': 'new' } } });
    expect(fixed).toMatchObject({ status: 200, body: { version: 2 } });

    const refusedPut = await call('PUT', '/v1/actions/filed', { name: 'x', endpoint: { url: `${receiver.url}/x`, method: 'POST' } });
    expect(refusedPut).toMatchObject({ status: 409, body: { error: { code: 'managed_by_files', details: { file } } } });
    expect(String((refusedPut.body.error as { message: string }).message)).toContain(file);
    expect(await call('DELETE', '/v1/actions/filed')).toMatchObject({ status: 409, body: { error: { code: 'managed_by_files' } } });
    const cliDelete = await cli(['actions', 'delete', 'filed']);
    expect(cliDelete.code).toBe(2);
    expect(cliDelete.err).toContain(file);
    const cliApply = await cli(['actions', 'apply', file]);
    expect(cliApply.code).toBe(2);
    expect(cliApply.err).toMatch(/managed by .*filed\.yaml/);

    const before = { filed: 1, live: 2 };
    // An api restart with unchanged files, a worker start and stop, and every CLI read command.
    await api.stop();
    api = await runApi({ ...config, ACTIONS_DIR: join(tmp, 'actions') });
    await api.actionsApplied;
    expect(await versions()).toEqual(before);
    const worker = await runWorker({ ...config, ACTIONS_DIR: join(tmp, 'actions') });
    await worker.stop();
    const cliEnv = { ...env, ACTIONS_DIR: join(tmp, 'actions') };
    for (const args of [
      ['actions', 'list'],
      ['actions', 'list', '--json'],
      ['actions', 'get', 'live'],
      ['stats'],
      ['stats', '--json'],
      ['dlq', 'list'],
      ['dlq', 'list', '--json'],
    ]) {
      expect((await cli(args, { env: cliEnv })).code, args.join(' ')).toBe(0);
    }
    expect(await versions()).toEqual(before);
    expect((await ctx.store.get('live'))?.definition.endpoint.headers).toEqual({ 'X-Fix': 'new' });

    // SIGHUP applies the folder again: a changed file is a new version ...
    writeFileSync(file, actionYaml('filed', 'two'));
    process.emit('SIGHUP');
    await waitFor(async () => (await ctx.store.get('filed'))?.version === 2, 10_000, 'filed v2 after SIGHUP');
    // ... and an action whose file is gone is handed back to the API.
    rmSync(file);
    const report = await api.reloadActions();
    expect(report?.released).toEqual(['filed']);
    expect((await call('PUT', '/v1/actions/filed', { name: 'x', endpoint: { url: `${receiver.url}/x`, method: 'POST' } })).status).toBe(
      200,
    );
    await api.stop();
  });
});

describe('an action file holding itself (a YAML alias to its own parent)', () => {
  it('ACTIONS_DIR at start: the api stops with exit code 2, naming the file and the field', async () => {
    const dir = join(tmp, 'cyclic-start');
    mkdirSync(dir);
    writeFileSync(join(dir, 'a-loop.yaml'), cyclicYaml('loop_start'));
    writeFileSync(join(dir, 'b-alias.yaml'), aliasYaml('alias_start'));
    const failed = await run(process.execPath, ['--import', 'tsx', 'workers/action-relay.ts', 'api'], {
      env: { ...process.env, ...env, ACTIONS_DIR: dir },
      timeout: 20_000,
    }).then(
      () => null,
      (err: { code: number | null; stderr: string }) => err,
    );
    expect(failed?.code).toBe(2);
    expect(failed?.stderr).toContain(join(dir, 'a-loop.yaml'));
    expect(failed?.stderr).toMatch(/body\.self: refers back to one of its own parents/);
    expect(await ctx.store.get('loop_start')).toBeNull();
  });

  it('ACTIONS_DIR on SIGHUP: the file is refused and logged, the files after it applied, an alias without a cycle kept', async () => {
    const dir = join(tmp, 'cyclic-reload');
    mkdirSync(dir);
    writeFileSync(join(dir, 'a-alias.yaml'), aliasYaml('alias_reload'));
    const api = await runApi({ ...config, ACTIONS_DIR: dir });
    try {
      await api.actionsApplied;
      expect((await ctx.store.get('alias_reload'))?.definition.body).toEqual({ billing: { city: 'Lyon' }, shipping: { city: 'Lyon' } });

      writeFileSync(join(dir, 'b-loop.yaml'), cyclicYaml('loop_reload'));
      writeFileSync(join(dir, 'c-after.yaml'), actionYaml('after_loop', 'one'));
      // Before the fix, this retried every second for ever: a bounded wait makes that a failure.
      const report = await Promise.race([api.reloadActions(), new Promise<'stuck'>((r) => setTimeout(() => r('stuck'), 5000))]);
      expect(report).not.toBe('stuck');
      expect(report).toMatchObject({
        refused: [{ file: join(dir, 'b-loop.yaml'), error: { problems: [{ path: 'body.self', message: expect.stringMatching(CYCLE) }] } }],
        applied: [{ id: 'after_loop', version: 1, file: join(dir, 'c-after.yaml') }],
        unchanged: ['alias_reload'],
      });
      expect(await ctx.store.get('loop_reload')).toBeNull();
    } finally {
      await api.stop();
    }
  });

  it('actions apply exits 2 naming the file and the field, and applies the other files', async () => {
    const dir = join(tmp, 'cyclic-cli');
    mkdirSync(dir);
    writeFileSync(join(dir, 'a-alias.yaml'), aliasYaml('alias_cli'));
    writeFileSync(join(dir, 'b-loop.yaml'), cyclicYaml('loop_cli'));
    writeFileSync(join(dir, 'c-after.yaml'), actionYaml('after_cli', 'one'));
    const applied = await cli(['actions', 'apply', dir]);
    expect(applied.code).toBe(2);
    expect(applied.err.split('\n')).toEqual([
      expect.stringContaining(join(dir, 'b-loop.yaml')),
      expect.stringMatching(/^ {2}body\.self: refers back/),
    ]);
    expect(applied.out.split('\n')).toEqual([
      `created alias_cli v1 (${join(dir, 'a-alias.yaml')})`,
      `created after_cli v1 (${join(dir, 'c-after.yaml')})`,
    ]);
    expect((await ctx.store.get('alias_cli'))?.definition.body).toEqual({ billing: { city: 'Lyon' }, shipping: { city: 'Lyon' } });
    expect(await ctx.store.get('loop_cli')).toBeNull();
  });
});

describe('ACTIONS_DIR when applying fails for a reason that is not Redis', () => {
  it('a fault of our own ends the apply with its error, instead of a retry every second for ever', async () => {
    const dir = join(tmp, 'own-fault');
    mkdirSync(dir);
    writeFileSync(join(dir, 'a.yaml'), actionYaml('own_fault', 'one'));
    const own = await testContext(config);
    own.store.put = () => Promise.reject(new TypeError('a bug of ours'));
    const api = await runApi({ ...config, ACTIONS_DIR: dir }, own);
    try {
      const outcome = await Promise.race([
        api.actionsApplied.then(
          () => 'applied',
          (err: unknown) => err,
        ),
        new Promise<'stuck'>((r) => setTimeout(() => r('stuck'), 5000)),
      ]);
      expect(outcome).toBeInstanceOf(TypeError);
      expect((outcome as Error).message).toBe('a bug of ours');
    } finally {
      await api.stop();
      await own.close();
    }
  });

  it('on SIGHUP, a folder gone since the start is logged and the api keeps serving (no unhandled rejection)', async () => {
    const dir = join(tmp, 'gone-on-hangup');
    mkdirSync(dir);
    writeFileSync(join(dir, 'a.yaml'), actionYaml('gone_later', 'one'));
    const lines: string[] = [];
    const own = await testContext(config, process.env, lines);
    const api = await runApi({ ...config, ACTIONS_DIR: dir }, own);
    try {
      await api.actionsApplied;
      rmSync(dir, { recursive: true, force: true });
      process.emit('SIGHUP', 'SIGHUP');
      await waitFor(() => lines.some((l) => l.includes('SIGHUP: ACTIONS_DIR not applied')), 5000, 'the failure logged');
      expect((await fetch(`${api.url}/healthz`)).status).toBe(200);
    } finally {
      await api.stop();
      await own.close();
    }
  });
});

describe('a CLI for scripts', () => {
  let deadId: string;

  beforeAll(async () => {
    await ctx.store.put({ id: 'broken', name: 'broken', endpoint: { url: `${receiver.url}/broken`, method: 'POST' } });
    const worker = await startTestWorker(config);
    deadId = (await ctx.producer.enqueue({ actionId: 'broken', params: {}, idempotencyKey: 'order-77' })).jobId;
    await waitFor(() => ctx.deadLetters.get(deadId), 10_000, 'the dead letter');
    await worker.stop();
  });

  it('refuses bad input and unknown ids with exit code 2 and a message', async () => {
    const cases: [string[], RegExp][] = [
      [['dlq', 'list', '--reason', 'bogus'], /--reason.*expected one of http_status/],
      [['dlq', 'list', '--status', '999'], /--status.*100 to 599/],
      [['dlq', 'list', '--limit', '0'], /--limit/],
      [['dlq', 'replay', 'no-such-job'], /no dead letter for "no-such-job": nothing done/],
      [['dlq', 'purge', 'no-such-job', deadId], /no dead letter for "no-such-job"/],
      [['dlq', 'show', 'no-such-job'], /no dead letter for job "no-such-job"/],
      [['actions', 'get', 'no-such-action'], /action "no-such-action" is not defined/],
      [['actions', 'delete', 'no-such-action'], /action "no-such-action" is not defined/],
    ];
    for (const [args, message] of cases) {
      const r = await cli(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.err, args.join(' ')).toMatch(message);
    }
    // Nothing was done by the refused purge that named a good id too.
    expect(await ctx.deadLetters.get(deadId)).not.toBeNull();
  });

  it('reads as plain text with a header or as JSON; actions get prints a definition that applies as is', async () => {
    const list = await cli(['dlq', 'list']);
    expect(list.out.split('\n')[0]).toBe('JOB ID\tACTION\tREASON\tSTATUS\tATTEMPTS\tFAILED AT');
    expect(list.out).toContain(`${deadId}\tbroken\thttp_status\t400\t1\t`);
    const json = JSON.parse((await cli(['dlq', 'list', '--json'])).out) as { items: { jobId: string }[]; nextCursor: null };
    expect(json).toMatchObject({ items: [{ jobId: deadId, actionId: 'broken', reason: 'http_status', status: 400 }], nextCursor: null });
    expect(JSON.parse((await cli(['dlq', 'show', deadId, '--json'])).out)).toMatchObject({
      jobId: deadId,
      job: { idempotencyKey: 'order-77' },
    });
    const stats = await cli(['stats']);
    expect(stats.out.split('\n')[0]).toBe('QUEUE\tWAITING\tDELAYED\tACTIVE\tDELIVERED\tDEAD\tFAILED\tDLQ\tRESULTS\tIN_LINE');
    expect(JSON.parse((await cli(['stats', '--json'])).out)).toMatchObject({ queue: { dead: 1 }, dlq: 1 });
    const actions = JSON.parse((await cli(['actions', 'list', '--json'])).out) as { id: string; version: number }[];
    expect(actions.find((a) => a.id === 'broken')).toMatchObject({ version: 1 });

    const got = await cli(['actions', 'get', 'broken']);
    expect(JSON.parse(got.out)).toMatchObject({ id: 'broken', endpoint: { url: `${receiver.url}/broken` } });
    const file = join(tmp, 'broken.json');
    writeFileSync(file, got.out);
    const applied = await cli(['actions', 'apply', file]);
    expect(applied).toMatchObject({ code: 0, out: `unchanged broken v1 (${file})` });
  });

  it('dry runs list the ids; a replay prints the mapping, its results entry says replayOf, and the dead id says replayedAs', async () => {
    const dryPurge = await cli(['dlq', 'purge', '--all', '--dry-run']);
    expect(dryPurge.out).toBe(`would purge 1 dead letter(s):\n${deadId}`);
    const dryReplay = JSON.parse((await cli(['dlq', 'replay', deadId, '--dry-run', '--json'])).out) as unknown;
    expect(dryReplay).toEqual({ matched: 1, jobIds: [deadId] });
    expect(await ctx.deadLetters.get(deadId)).not.toBeNull();

    // The receiver lets the replay through.
    receiver.handler = (_r, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    const worker = await startTestWorker(config);
    try {
      const replay = await cli(['dlq', 'replay', deadId, '--json'], { tty: false });
      expect(replay.code).toBe(0);
      expect(replay.raw).toBe('');
      const answer = JSON.parse(replay.out) as { replayed: number; replays: { from: string; jobId: string }[] };
      expect(answer).toMatchObject({ replayed: 1, replays: [{ from: deadId }] });
      const newId = answer.replays[0]?.jobId as string;
      expect(newId).not.toBe(deadId);
      const entry = await waitFor(async () => (await readResults(ctx)).find((e) => e.jobId === newId), 10_000, 'the replay results entry');
      expect(entry).toMatchObject({ outcome: 'delivered', replayOf: deadId, idempotencyKey: 'order-77' });
      const first = (await readResults(ctx)).find((e) => e.jobId === deadId);
      expect(first).toMatchObject({ outcome: 'dead', idempotencyKey: 'order-77' });
      expect(first?.replayOf).toBeUndefined();
      expect(await getJobStatus(ctx.queues, ctx.redis, deadId)).toMatchObject({ state: 'dead', replayedAs: newId });
      expect(await getJobStatus(ctx.queues, ctx.redis, newId)).toMatchObject({ state: 'delivered' });
    } finally {
      await worker.stop();
    }
  });

  it('draws the progress bar only on a terminal', async () => {
    const ids: string[] = [];
    receiver.handler = (_r, res) => res.writeHead(400).end();
    const worker = await startTestWorker(config);
    for (let i = 0; i < 2; i++) ids.push((await ctx.producer.enqueue({ actionId: 'broken', params: {} })).jobId);
    await waitFor(async () => (await ctx.deadLetters.getMany(ids)).length === 2, 10_000, 'two dead letters');
    await worker.stop();
    const quiet = await cli(['dlq', 'replay', ids[0] as string], { tty: false });
    expect(quiet.raw).toBe('');
    expect(quiet.out.split('\n')).toEqual(['DEAD JOB ID\tNEW JOB ID', expect.stringMatching(new RegExp(`^${ids[0]}\\t[0-9a-f-]{36}$`))]);
    const drawn = await cli(['dlq', 'replay', ids[1] as string], { tty: true });
    expect(drawn.raw).toMatch(/replayed 1\/1 \[#+\]\n$/);
  });

  it('under a prefix without relay data, read commands warn and create no key', async () => {
    const other = testConfig();
    const r = await cli(['stats'], { env: { ...env, ACTION_RELAY_PREFIX: other.ACTION_RELAY_PREFIX } });
    expect(r.code).toBe(0);
    expect(r.err).toContain(`no action-relay data under prefix ${other.ACTION_RELAY_PREFIX}`);
    const list = await cli(['dlq', 'list', '--json'], { env: { ...env, ACTION_RELAY_PREFIX: other.ACTION_RELAY_PREFIX } });
    expect(JSON.parse(list.out)).toEqual({ items: [], nextCursor: null });
    const [, keys] = await ctx.redis.scan('0', 'MATCH', `{${other.ACTION_RELAY_PREFIX}*`, 'COUNT', 100_000);
    expect(keys).toEqual([]);
  });

  it('a reader that goes away ends the output quietly (EPIPE), exit code 0', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'workers/action-relay.ts', 'dlq', 'list'], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    expect(stderr).not.toMatch(/EPIPE|Error/);
    expect(code).toBe(0);
  });
});
