import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiServer } from '../../src/api/api-server.js';
import { tokenDigest } from '../../src/api/api-tokens.js';
import type { OpenApiDocument } from '../../src/api/openapi.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import { removePrefixKeys, setupRun, testConfig, testContext, type Receiver } from '../support/harness.js';

/*
 * Each route's answer against the OpenAPI document the API serves (GET /docs/json): the status must
 * be one the document lists for that operation, errors included (api-docs.redis.test.ts checks the
 * success bodies against the zod schemas).
 */

const cleanups: (() => Promise<void>)[] = [];
let receiver: Receiver;
let ctx: RelayContext;
let api: FastifyInstance;
let doc: OpenApiDocument;

const READER = 'openapi-reader-token-0123456789';
let scoped: FastifyInstance;
let scopedDoc: OpenApiDocument;

beforeAll(async () => {
  const run = await setupRun(cleanups);
  receiver = run.receiver;
  ctx = run.ctx;
  api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
  cleanups.push(() => api.close());
  doc = (await api.inject({ method: 'GET', url: '/docs/json' })).json();

  const dir = await mkdtemp(join(tmpdir(), 'openapi-tokens-'));
  const file = join(dir, 'tokens.yaml');
  await writeFile(file, `tokens:\n  - { name: dashboards, sha256: ${tokenDigest(READER)}, scopes: [read] }\n`);
  const config = testConfig({ API_TOKENS_FILE: file, ACTION_RELAY_PREFIX: run.config.ACTION_RELAY_PREFIX });
  const sctx = await testContext(config);
  scoped = await createApiServer({ ctx: sctx, sender: createHttpSender({ guard: sctx.egress }) });
  scopedDoc = (await scoped.inject({ method: 'GET', url: '/docs/json' })).json();
  cleanups.push(async () => {
    await scoped.close();
    await sctx.close();
    await removePrefixKeys(config);
    await rm(dir, { recursive: true, force: true });
  });

  await ctx.store.put({
    id: 'doc_a',
    name: 'doc a',
    endpoint: { url: receiver.url, path: '/a', method: 'POST' },
    parameters: { n: { type: 'integer', required: true } },
    body: { n: '{{params.n}}' },
  });
});

afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** Checks that the document lists the answer's status for the operation. */
function conforms(d: OpenApiDocument, method: string, path: string, res: LightMyRequestResponse): void {
  const op = d.paths[path]?.[method];
  expect(op, `${method} ${path} in the document`).toBeDefined();
  const documented = Object.keys(op?.responses ?? {});
  expect(documented, `${method} ${path} answered ${res.statusCode} ${res.body.slice(0, 200)}, which the document does not list`).toContain(
    String(res.statusCode),
  );
}

describe('answers against the OpenAPI document', () => {
  it('success answers: each status is in the document', async () => {
    const cases: [string, string, InjectOptions][] = [
      ['get', '/v1/actions', { method: 'GET', url: '/v1/actions' }],
      ['get', '/v1/actions/{id}', { method: 'GET', url: '/v1/actions/doc_a' }],
      ['post', '/v1/actions/{id}/preview', { method: 'POST', url: '/v1/actions/doc_a/preview', payload: { params: { n: 1 } } }],
      ['post', '/v1/actions/{id}/test', { method: 'POST', url: '/v1/actions/doc_a/test', payload: { params: { n: 1 } } }],
      ['get', '/v1/stats', { method: 'GET', url: '/v1/stats' }],
      ['get', '/v1/dlq', { method: 'GET', url: '/v1/dlq' }],
      ['post', '/v1/dlq/replay', { method: 'POST', url: '/v1/dlq/replay', payload: { all: true, dryRun: true } }],
      ['post', '/v1/dlq/purge', { method: 'POST', url: '/v1/dlq/purge', payload: { jobIds: ['x'] } }],
      ['get', '/healthz', { method: 'GET', url: '/healthz' }],
      ['get', '/readyz', { method: 'GET', url: '/readyz' }],
    ];
    for (const [m, p, req] of cases) conforms(doc, m, p, await api.inject(req));
  });

  it('error answers of the routes: 400, 404 and 409 as documented', async () => {
    const cases: [string, string, InjectOptions][] = [
      ['put', '/v1/actions/{id}', { method: 'PUT', url: '/v1/actions/doc_b', payload: { name: 'b' } }],
      ['get', '/v1/actions/{id}', { method: 'GET', url: '/v1/actions/none' }],
      ['delete', '/v1/actions/{id}', { method: 'DELETE', url: '/v1/actions/none' }],
      ['post', '/v1/actions/{id}/preview', { method: 'POST', url: '/v1/actions/doc_a/preview', payload: { params: {} } }],
      ['post', '/v1/jobs', { method: 'POST', url: '/v1/jobs', payload: { actionId: 'doc_a', params: { n: 'x' } } }],
      ['post', '/v1/jobs/batch', { method: 'POST', url: '/v1/jobs/batch', payload: { jobs: 'x' } }],
      ['get', '/v1/jobs/{jobId}', { method: 'GET', url: '/v1/jobs/nope' }],
      ['get', '/v1/dlq', { method: 'GET', url: '/v1/dlq?cursor=zzz' }],
      ['get', '/v1/dlq/{jobId}', { method: 'GET', url: '/v1/dlq/nope' }],
      ['delete', '/v1/dlq/{jobId}', { method: 'DELETE', url: '/v1/dlq/nope' }],
      ['post', '/v1/dlq/replay', { method: 'POST', url: '/v1/dlq/replay', payload: {} }],
      ['post', '/v1/dlq/purge', { method: 'POST', url: '/v1/dlq/purge', payload: {} }],
    ];
    for (const [m, p, req] of cases) conforms(doc, m, p, await api.inject(req));
  });

  it('a body that is not application/json: 415 unsupported_media_type is in the document', async () => {
    const res = await api.inject({ method: 'POST', url: '/v1/jobs', headers: { 'content-type': 'text/plain' }, payload: '{}' });
    expect(res.statusCode).toBe(415);
    conforms(doc, 'post', '/v1/jobs', res);
  });

  it("a token without the route's scope: 403 forbidden is in the document", async () => {
    const res = await scoped.inject({
      method: 'PUT',
      url: '/v1/actions/doc_c',
      headers: { authorization: `Bearer ${READER}` },
      payload: { name: 'c', endpoint: { url: receiver.url, method: 'POST' } },
    });
    expect(res.statusCode).toBe(403);
    conforms(scopedDoc, 'put', '/v1/actions/{id}', res);
  });

  it('POST /v1/actions/{id}/test towards a refused destination: the document names the status the route answers', async () => {
    const config = testConfig({ EGRESS_ALLOW_HOSTS: '', ACTION_RELAY_PREFIX: ctx.config.ACTION_RELAY_PREFIX });
    const bctx = await testContext(config);
    const blocked = await createApiServer({ ctx: bctx, sender: createHttpSender({ guard: bctx.egress }) });
    try {
      const res = await blocked.inject({ method: 'POST', url: '/v1/actions/doc_a/test', payload: { params: { n: 1 } } });
      expect(res.json().error.code).toBe('blocked_destination');
      const op = doc.paths['/v1/actions/{id}/test']?.post;
      const describedAs = Object.entries(op?.responses ?? {})
        .filter(([, r]) => /blocked destination/i.test(String((r as { description?: string }).description)))
        .map(([status]) => status);
      expect(describedAs, `the route answered ${res.statusCode}; the document describes blocked destination under ${describedAs}`).toEqual([
        String(res.statusCode),
      ]);
    } finally {
      await blocked.close();
      await bctx.close();
    }
  });
});
