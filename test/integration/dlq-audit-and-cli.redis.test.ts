import { randomUUID } from 'node:crypto';
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createApiServer } from '../../src/api/api-server.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import type { Config } from '../../src/config/config.js';
import type { DeadLetterRecord } from '../../src/queue/outcome-writer.js';
import { removePrefixKeys, testConfig, testContext } from '../support/harness.js';

/* The operator side: the audit trail of an irreversible purge, and the CLI when Redis is down. */

let config: Config;
let ctx: RelayContext;
let api: FastifyInstance;
const logLines: string[] = [];
const TOKEN = 'audit-admin-token-0123456789';

async function addDead(actionId: string): Promise<string> {
  const jobId = randomUUID();
  const now = Date.now();
  const rec: DeadLetterRecord = {
    jobId,
    actionId,
    job: { actionId, params: {}, context: {}, enqueuedAt: new Date(now).toISOString() },
    reason: 'http_status',
    status: 404,
    failedAt: new Date(now).toISOString(),
    errorResponse: {},
    attempts: [],
  };
  const keys = ctx.queues.partitions[0]!.keys;
  await ctx.redis.multi().zadd(keys.dlq, now, jobId).hset(keys.dlqRecords, jobId, JSON.stringify(rec)).exec();
  return jobId;
}

beforeAll(async () => {
  config = testConfig({ ADMIN_TOKEN: TOKEN });
  ctx = await testContext(config, process.env, logLines);
  api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
});

afterAll(async () => {
  await api.close();
  await ctx.close();
  await removePrefixKeys(config);
});

describe('audit of DLQ changes (docs/api.md, Access: "the ids touched")', () => {
  it('a purge by filter writes the purged dead ids into its audit line', async () => {
    const ids = [await addDead('audit_a'), await addDead('audit_a')];
    const res = await api.inject({
      method: 'POST',
      url: '/v1/dlq/purge',
      headers: { authorization: `Bearer ${TOKEN}` },
      payload: { filter: { actionId: 'audit_a' } },
    });
    expect(res.json()).toEqual({ purged: 2 });
    const audit = logLines.filter((l) => l.includes('"audit"') && l.includes('/v1/dlq/purge'));
    expect(audit).toHaveLength(1);
    for (const id of ids) expect(audit[0], `audit line of an irreversible purge does not name ${id}: ${audit[0]}`).toContain(id);
  });

  it('a replay by filter writes the dead ids it replayed (not only the new ones) into its audit line', async () => {
    await ctx.store.put({ id: 'audit_b', name: 'audit_b', endpoint: { url: 'http://127.0.0.1:9/x', method: 'POST' } });
    const ids = [await addDead('audit_b'), await addDead('audit_b')];
    const res = await api.inject({
      method: 'POST',
      url: '/v1/dlq/replay',
      headers: { authorization: `Bearer ${TOKEN}` },
      payload: { filter: { actionId: 'audit_b' }, ratePerSecond: 0.001 },
    });
    expect(res.json()).toMatchObject({ replayed: 2 });
    const audit = logLines.filter((l) => l.includes('"audit"') && l.includes('/v1/dlq/replay'));
    expect(audit).toHaveLength(1);
    for (const id of ids) expect(audit[0], `audit line of a replay does not name the dead id ${id}: ${audit[0]}`).toContain(id);
    // Leave nothing to run: the replays are delayed far out; remove them.
    for (const p of ctx.queues.partitions) await p.queue.drain(true);
  });
});

describe('the CLI with Redis unreachable (docs/cli.md, Exit codes)', () => {
  it('dlq purge --all --json exits 1 with one line on stderr and nothing but JSON (here: nothing) on stdout', async () => {
    const child = spawn(process.execPath, ['dist/workers/action-relay.js', 'dlq', 'purge', '--all', '--json'], {
      cwd: process.cwd(),
      env: { PATH: process.env.PATH, REDIS_URL: 'redis://127.0.0.1:1', ACTION_RELAY_PREFIX: config.ACTION_RELAY_PREFIX },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    const lines = out.split('\n').filter(Boolean);
    const problems: string[] = [];
    if (code !== 1) problems.push(`exit code ${code}`);
    if (err.trim().split('\n').length !== 1) problems.push(`stderr has ${err.trim().split('\n').length} lines`);
    if (!/redis/i.test(err)) problems.push(`the message does not say Redis is unreachable: ${err.trim()}`);
    if (lines.length > 0) problems.push(`stdout of a --json command got ${lines.length} log lines, e.g. ${lines[0]}`);
    expect(problems).toEqual([]);
  }, 120_000);
});
