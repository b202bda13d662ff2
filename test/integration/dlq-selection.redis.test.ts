import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createApiServer } from '../../src/api/api-server.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import { main } from '../../src/cli/cli.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import type { Config } from '../../src/config/config.js';
import type { DeadLetterRecord } from '../../src/queue/outcome-writer.js';
import { LOOPBACK_ALLOWED, removePrefixKeys, testConfig, testContext } from '../support/harness.js';

/*
 * The operator side: what replay / purge / delete touch, through the API and the CLI.
 * Dead letters are written straight into this test's own keys (zset score = failedAt ms, as the
 * finish script writes them), so that failedAt and action are exactly what each case needs.
 */

let config: Config;
let ctx: RelayContext;
let api: FastifyInstance;
let env: NodeJS.ProcessEnv;

async function cli(args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(['node', 'action-relay', ...args], { out: (l) => out.push(l), err: (l) => err.push(l), env });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

async function addDead(actionId: string, failedAtMs: number, status = 404): Promise<string> {
  const jobId = randomUUID();
  const rec: DeadLetterRecord = {
    jobId,
    actionId,
    job: { actionId, params: {}, context: { journeyId: 'j1' }, enqueuedAt: new Date(failedAtMs - 1000).toISOString() },
    reason: 'http_status',
    status,
    failedAt: new Date(failedAtMs).toISOString(),
    errorResponse: {},
    attempts: [],
  };
  const keys = ctx.queues.partitions[0]!.keys;
  await ctx.redis.multi().zadd(keys.dlq, failedAtMs, jobId).hset(keys.dlqRecords, jobId, JSON.stringify(rec)).exec();
  return jobId;
}

const exists = async (id: string) => (await ctx.deadLetters.get(id)) !== null;

beforeAll(async () => {
  config = testConfig();
  env = {
    REDIS_URL: config.REDIS_URL,
    ACTION_RELAY_PREFIX: config.ACTION_RELAY_PREFIX,
    EGRESS_ALLOW_HOSTS: LOOPBACK_ALLOWED,
    LOG_LEVEL: 'silent',
    METRICS_PORT: '0',
  };
  ctx = await testContext(config);
  api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
});

afterAll(async () => {
  await api.close();
  await ctx.close();
  await removePrefixKeys(config);
});

describe('replay / purge selection', () => {
  it('POST /v1/dlq/purge with jobIds and a filter purges only the named ids that match the filter', async () => {
    const a = await addDead('sel_a', Date.now());
    const b = await addDead('sel_b', Date.now());
    const res = await api.inject({
      method: 'POST',
      url: '/v1/dlq/purge',
      payload: { jobIds: [a, b], filter: { actionId: 'sel_a' } },
    });
    expect(res.statusCode).toBe(200);
    // The filter names sel_a: a dead letter of sel_b must not be deleted.
    expect(await exists(b), 'dead letter of sel_b purged although the filter says actionId sel_a').toBe(true);
    expect(res.json()).toEqual({ purged: 1 });
  });

  it('POST /v1/dlq/replay dry run with jobIds and a filter lists only the ids that match the filter', async () => {
    const a = await addDead('sel_c', Date.now());
    const b = await addDead('sel_d', Date.now());
    const res = await api.inject({
      method: 'POST',
      url: '/v1/dlq/replay',
      payload: { jobIds: [a, b], filter: { actionId: 'sel_c' }, dryRun: true },
    });
    expect(res.statusCode).toBe(200);
    expect(res.json(), 'dry run matched a dead letter of another action than the filter names').toEqual({ matched: 1, jobIds: [a] });
  });

  it('CLI dlq purge <ids> --action X leaves the dead letters of other actions', async () => {
    const a = await addDead('sel_e', Date.now());
    const b = await addDead('sel_f', Date.now());
    const r = await cli(['dlq', 'purge', a, b, '--action', 'sel_e']);
    expect(r.code).toBe(0);
    expect(await exists(b), `dead letter of sel_f purged by "dlq purge ... --action sel_e" (out: ${r.out})`).toBe(true);
  });

  it('DELETE /v1/dlq/:jobId of an unknown dead letter answers 404 not_found (docs/api.md, Errors)', async () => {
    const res = await api.inject({ method: 'DELETE', url: `/v1/dlq/${randomUUID()}` });
    expect(res.statusCode, `answered ${res.statusCode} ${res.body}`).toBe(404);
    expect(res.json()).toMatchObject({ error: { code: 'not_found' } });
  });
});

describe('replay counts', () => {
  it('POST /v1/dlq/replay naming one dead id twice reports one replay, not two', async () => {
    const a = await addDead('dup_a', Date.now());
    const res = await api.inject({ method: 'POST', url: '/v1/dlq/replay', payload: { jobIds: [a, a], ratePerSecond: 0.001 } });
    expect(res.statusCode).toBe(200);
    const body = res.json() as { replayed: number; replays: { from: string; jobId: string }[] };
    const jobs = await ctx.queues.partitions[0]!.queue.getJobs(['delayed', 'waiting', 'prioritized']);
    expect(jobs.filter((j) => (j.data as { replayOf?: string }).replayOf === a)).toHaveLength(1);
    expect(body.replayed, `one job was added but the answer says ${JSON.stringify(body)}`).toBe(1);
  });
});

describe('time-range edges and pages', () => {
  it('since and until are inclusive, in ISO and epoch ms alike, for list, dry-run replay and purge', async () => {
    const t0 = Date.parse('2031-03-04T05:06:07.000Z');
    const before = await addDead('edge_a', t0 - 1);
    const at0 = await addDead('edge_a', t0);
    const at1 = await addDead('edge_a', t0 + 1000);
    const after = await addDead('edge_a', t0 + 1001);
    const q = `actionId=edge_a&since=${encodeURIComponent(new Date(t0).toISOString())}&until=${t0 + 1000}`;
    const listed = (await api.inject({ method: 'GET', url: `/v1/dlq?${q}` })).json() as { items: { jobId: string }[] };
    expect(listed.items.map((i) => i.jobId)).toEqual([at1, at0]);
    const dry = await api.inject({
      method: 'POST',
      url: '/v1/dlq/replay',
      payload: { filter: { actionId: 'edge_a', since: new Date(t0).toISOString(), until: t0 + 1000 }, dryRun: true },
    });
    expect(dry.json()).toEqual({ matched: 2, jobIds: [at1, at0] });
    const purge = await cli([
      'dlq',
      'purge',
      '--all',
      '--action',
      'edge_a',
      '--since',
      String(t0),
      '--until',
      new Date(t0 + 1000).toISOString(),
    ]);
    expect(purge.code).toBe(0);
    expect([await exists(before), await exists(at0), await exists(at1), await exists(after)]).toEqual([true, false, false, true]);
  });

  it('pages of one failedAt millisecond neither repeat nor miss an entry', async () => {
    const t = Date.parse('2032-01-01T00:00:00.000Z');
    const ids = new Set<string>();
    for (let i = 0; i < 7; i++) ids.add(await addDead('page_a', t));
    const seen: string[] = [];
    let cursor: string | null = '';
    while (cursor !== null) {
      const res = await api.inject({
        method: 'GET',
        url: `/v1/dlq?actionId=page_a&limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
      });
      expect(res.statusCode).toBe(200);
      const body = res.json() as { items: { jobId: string }[]; nextCursor: string | null };
      seen.push(...body.items.map((i) => i.jobId));
      cursor = body.nextCursor;
    }
    expect(seen).toHaveLength(7);
    expect(new Set(seen)).toEqual(ids);
  });

  it('bad DLQ input answers 400 naming the field, never 500', async () => {
    const cases: [string, string, unknown, string][] = [
      ['GET', '/v1/dlq?limit=0', undefined, 'limit'],
      ['GET', '/v1/dlq?since=yesterday', undefined, 'since'],
      ['GET', '/v1/dlq?cursor=abc', undefined, 'cursor'],
      ['GET', '/v1/dlq?status=abc', undefined, 'status'],
      ['POST', '/v1/dlq/replay', { filter: { since: 'nope' } }, 'filter.since'],
      ['POST', '/v1/dlq/replay', { jobIds: [1] }, 'jobIds.0'],
      ['POST', '/v1/dlq/replay', { all: true, ratePerSecond: -1 }, 'ratePerSecond'],
      ['POST', '/v1/dlq/purge', { filter: { bogus: 1 } }, 'filter'],
    ];
    for (const [method, url, payload, field] of cases) {
      const res = await api.inject({ method: method as 'GET', url, ...(payload !== undefined ? { payload: payload as object } : {}) });
      expect(res.statusCode, `${method} ${url} ${JSON.stringify(payload)}: ${res.body}`).toBe(400);
      expect(JSON.stringify(res.json().error.details ?? []), `${url}: ${res.body}`).toContain(field.split('.')[0]);
    }
  });
});
