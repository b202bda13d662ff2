import { Validator } from '@seriousme/openapi-schema-validator';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { actionDefinitionSchema } from '../../src/actions/action-schema.js';
import { tryBodySchema } from '../../src/api/action-routes.js';
import { createApiServer } from '../../src/api/api-server.js';
import { DLQ_BOARD_NAME } from '../../src/api/dlq-board-adapter.js';
import { purgeRequestSchema } from '../../src/api/dlq-routes.js';
import type { OpenApiDocument } from '../../src/api/openapi.js';
import * as responses from '../../src/api/response-schemas.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import { replayRequestSchema } from '../../src/queue/dlq-operations.js';
import { jobInputSchema } from '../../src/queue/job-schema.js';
import { removePrefixKeys, setupRun, startTestWorker, testConfig, testContext, waitFor, type Receiver } from '../support/harness.js';

/** The routes of docs/api.md, route by route. */
const DOCUMENTED_ROUTES = [
  'get /healthz',
  'get /readyz',
  'get /metrics',
  'put /v1/actions/{id}',
  'get /v1/actions',
  'get /v1/actions/{id}',
  'delete /v1/actions/{id}',
  'post /v1/actions/{id}/preview',
  'post /v1/actions/{id}/test',
  'post /v1/jobs',
  'post /v1/jobs/batch',
  'get /v1/jobs/{jobId}',
  'get /v1/dlq',
  'get /v1/dlq/{jobId}',
  'post /v1/dlq/replay',
  'delete /v1/dlq/{jobId}',
  'post /v1/dlq/purge',
  'get /v1/stats',
];
const TOKEN = 'docs-admin-token-0123456789';

const cleanups: (() => Promise<void>)[] = [];
let receiver: Receiver;
let ctx: RelayContext;
let api: FastifyInstance;
/** The same deployment, but with ADMIN_TOKEN set. */
let guarded: FastifyInstance;
let doc: OpenApiDocument;

beforeAll(async () => {
  const run = await setupRun(cleanups);
  receiver = run.receiver;
  ctx = run.ctx;
  api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
  cleanups.push(() => api.close());

  const guardedConfig = testConfig({ ADMIN_TOKEN: TOKEN, ACTION_RELAY_PREFIX: run.config.ACTION_RELAY_PREFIX });
  const guardedCtx = await testContext(guardedConfig);
  guarded = await createApiServer({ ctx: guardedCtx, sender: createHttpSender({ guard: guardedCtx.egress }) });
  cleanups.push(async () => {
    await guarded.close();
    await guardedCtx.close();
  });

  const res = await api.inject({ method: 'GET', url: '/docs/json' });
  expect(res.statusCode).toBe(200);
  doc = res.json();
});

afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** The fields of a zod object a body must carry: those that fail to parse when absent. */
function zodRequired(schema: z.ZodObject): string[] {
  return Object.entries(schema.shape)
    .filter(([, field]) => !(field as z.ZodType).safeParse(undefined).success)
    .map(([k]) => k)
    .sort();
}

type Json = Record<string, unknown>;

function component(name: string): { properties: Json; required?: string[]; additionalProperties?: unknown } {
  const s = doc.components.schemas[name];
  expect(s, `component ${name}`).toBeDefined();
  return s as never;
}

function requestComponent(method: string, path: string): string {
  const op = doc.paths[path]?.[method];
  const schema = (op?.requestBody as { content: { 'application/json': { schema: { $ref: string } } } } | undefined)?.content[
    'application/json'
  ].schema;
  expect(schema, `${method} ${path} request body`).toBeDefined();
  return (schema?.$ref ?? '').replace('#/components/schemas/', '');
}

type BoardQueue = { name: string; counts: Record<string, number>; readOnlyMode: boolean; jobs: Json[] };

async function boardQueues(app: FastifyInstance, query = '', headers: Record<string, string> = {}): Promise<BoardQueue[]> {
  const res = await app.inject({ method: 'GET', url: `/admin/queues/api/queues${query}`, headers });
  expect(res.statusCode).toBe(200);
  return res.json().queues;
}

describe('OpenAPI document at /docs/json', () => {
  it('is a valid OpenAPI 3.1 document, every $ref resolved', async () => {
    const validator = new Validator();
    const result = await validator.validate(doc as never);
    expect(result.errors).toBeUndefined();
    expect(result.valid).toBe(true);
    expect(validator.version).toBe('3.1');
  });

  it('lists every route of docs/api.md, each with a JSON error shape where it can fail', () => {
    const listed = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m} ${path}`));
    expect(listed.sort()).toEqual([...DOCUMENTED_ROUTES].sort());
    expect(component('Error')).toMatchObject({ properties: { error: { required: ['code', 'message'] } } });
    const errorRef = { content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
    expect(doc.paths['/v1/actions/{id}']?.put?.responses['400']).toMatchObject(errorRef);
    expect(doc.paths['/v1/dlq/{jobId}']?.get?.responses['404']).toMatchObject(errorRef);
    expect(doc.paths['/readyz']?.get?.responses['503']).toMatchObject(errorRef);
  });

  it('takes each request body from the zod schema the route parses it with', () => {
    const bodies: [string, string, z.ZodObject][] = [
      ['post', '/v1/jobs', jobInputSchema],
      ['post', '/v1/actions/{id}/preview', tryBodySchema],
      ['post', '/v1/actions/{id}/test', tryBodySchema],
      ['post', '/v1/dlq/replay', replayRequestSchema],
      ['post', '/v1/dlq/purge', purgeRequestSchema],
    ];
    for (const [method, path, schema] of bodies) {
      const c = component(requestComponent(method, path));
      expect(Object.keys(c.properties).sort(), `${method} ${path}`).toEqual(Object.keys(schema.shape).sort());
      expect(c.required ?? [], `${method} ${path}`).toEqual(expect.arrayContaining(zodRequired(schema)));
      expect((c.required ?? []).length).toBe(zodRequired(schema).length);
      // Strict objects: unknown keys are an error, and the document says so.
      expect(c.additionalProperties).toBe(false);
    }
    expect(zodRequired(jobInputSchema)).toEqual(['actionId']);

    // The action definition: every field of the schema, required as the schema requires them...
    const definition = component('ActionDefinition');
    expect(Object.keys(definition.properties).sort()).toEqual(Object.keys(actionDefinitionSchema.shape).sort());
    expect([...(definition.required ?? [])].sort()).toEqual(zodRequired(actionDefinitionSchema));
    expect(zodRequired(actionDefinitionSchema)).toEqual(['endpoint', 'id', 'name']);
    expect(definition.additionalProperties).toBe(false);
    // ...except that PUT /v1/actions/{id} takes the id from the URL.
    const put = component(requestComponent('put', '/v1/actions/{id}'));
    expect([...(put.required ?? [])].sort()).toEqual(['endpoint', 'name']);
    expect(Object.keys(put.properties).sort()).toEqual(Object.keys(definition.properties).sort());

    const batch = component(requestComponent('post', '/v1/jobs/batch'));
    expect(batch.properties.jobs).toMatchObject({ type: 'array', maxItems: 1000, items: { $ref: '#/components/schemas/JobInput' } });
  });

  it('documents the bearer token only on a server that has ADMIN_TOKEN', async () => {
    expect(doc.components.securitySchemes).toBeUndefined();
    expect(doc.paths['/v1/stats']?.get?.security).toBeUndefined();

    const res = await guarded.inject({ method: 'GET', url: '/docs/json' });
    expect(res.statusCode).toBe(200); // the document itself is public
    const withToken = res.json() as OpenApiDocument;
    expect(withToken.components.securitySchemes).toEqual({ bearerAuth: expect.objectContaining({ type: 'http', scheme: 'bearer' }) });
    for (const [path, ops] of Object.entries(withToken.paths)) {
      for (const op of Object.values(ops)) {
        if (path.startsWith('/v1/')) {
          expect(op.security, path).toEqual([{ bearerAuth: [] }]);
          expect(op.responses['401'], path).toBeDefined();
        } else {
          expect(op.security, path).toBeUndefined();
        }
      }
    }
  });

  it('serves Swagger UI at /docs', async () => {
    const res = await api.inject({ method: 'GET', url: '/docs' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toContain('text/html');
    expect(res.body).toContain('swagger-ui');
    const init = await api.inject({ method: 'GET', url: '/docs/static/swagger-initializer.js' });
    expect(init.statusCode).toBe(200);
  });
});

describe('the documented response shapes match what the API answers', () => {
  it('for actions, jobs, dead letters and stats', async () => {
    const action = {
      id: 'docs_shape',
      name: 'docs shape',
      endpoint: { url: receiver.url, path: '/gone', method: 'POST' },
      parameters: { n: { type: 'integer', required: true } },
      body: { n: '{{params.n}}' },
    };
    receiver.handler = (_req, res) => res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"gone"}');
    const put = await api.inject({ method: 'PUT', url: '/v1/actions/docs_shape', payload: { ...action, id: undefined } });
    expect(put.statusCode).toBe(201);
    responses.savedActionSchema.parse(put.json());
    responses.storedActionSchema.parse((await api.inject({ method: 'GET', url: '/v1/actions/docs_shape' })).json());
    responses.actionListSchema.parse((await api.inject({ method: 'GET', url: '/v1/actions' })).json());
    const preview = await api.inject({ method: 'POST', url: '/v1/actions/docs_shape/preview', payload: { params: { n: 1 } } });
    responses.describedRequestSchema.parse(preview.json());
    const test = await api.inject({ method: 'POST', url: '/v1/actions/docs_shape/test', payload: { params: { n: 1 } } });
    expect(test.statusCode).toBe(200);
    responses.testResultSchema.parse(test.json());

    const bad = await api.inject({ method: 'POST', url: '/v1/jobs', payload: { actionId: 'docs_shape', params: { n: 'x' } } });
    expect(bad.statusCode).toBe(400);
    responses.errorBodySchema.parse(bad.json());
    const batch = await api.inject({ method: 'POST', url: '/v1/jobs/batch', payload: { jobs: [{ actionId: 'docs_shape', params: {} }] } });
    responses.batchResultSchema.parse(batch.json());

    const worker = await startTestWorker(ctx.config);
    try {
      const enq = await api.inject({ method: 'POST', url: '/v1/jobs', payload: { actionId: 'docs_shape', params: { n: 1 } } });
      const { jobId } = responses.enqueueResultSchema.parse(enq.json());
      await waitFor(() => ctx.deadLetters.get(jobId), 10_000, 'the dead letter');
      responses.jobStatusSchema.parse((await api.inject({ method: 'GET', url: `/v1/jobs/${jobId}` })).json());
      responses.deadLetterRecordSchema.parse((await api.inject({ method: 'GET', url: `/v1/dlq/${jobId}` })).json());
      responses.dlqPageSchema.parse((await api.inject({ method: 'GET', url: '/v1/dlq?limit=5' })).json());
      const dry = await api.inject({ method: 'POST', url: '/v1/dlq/replay', payload: { jobIds: [jobId], dryRun: true } });
      expect(responses.replayResultSchema.parse(dry.json())).toEqual({ matched: 1, jobIds: [jobId] });
      responses.statsSchema.parse((await api.inject({ method: 'GET', url: '/v1/stats' })).json());
      responses.purgedSchema.parse((await api.inject({ method: 'POST', url: '/v1/dlq/purge', payload: { jobIds: ['none'] } })).json());
    } finally {
      await worker.stop();
    }
  });
});

describe('queue board at /admin/queues', () => {
  it('serves the UI and its assets', async () => {
    const page = await api.inject({ method: 'GET', url: '/admin/queues' });
    expect(page.statusCode).toBe(200);
    expect(page.headers['content-type']).toContain('text/html');
    expect(page.body).toContain('<base href="/admin/queues/"');
    const script = /src="(static\/js\/main[^"]+\.js)"/.exec(page.body)?.[1];
    expect(script).toBeDefined();
    const asset = await api.inject({ method: 'GET', url: `/admin/queues/${script}` });
    expect(asset.statusCode).toBe(200);
  });

  it('lists the delivery queue and the dead letters with their counts, the dead letters read-only', async () => {
    await ctx.store.put({
      id: 'board_dead',
      name: 'board dead',
      endpoint: { url: receiver.url, path: '/board', method: 'POST' },
      body: { hello: 'world' },
    });
    receiver.handler = (_req, res) => res.writeHead(422, { 'content-type': 'text/plain' }).end('unprocessable');
    const worker = await startTestWorker(ctx.config);
    let deadId: string;
    try {
      deadId = (await ctx.producer.enqueue({ actionId: 'board_dead', params: {} })).jobId;
      await waitFor(() => ctx.deadLetters.get(deadId), 10_000, 'the dead letter');
    } finally {
      await worker.stop();
    }
    // No worker now: this one waits.
    const waitingId = (await ctx.producer.enqueue({ actionId: 'board_dead', params: {} })).jobId;

    const queues = await boardQueues(api);
    expect(queues.map((q) => q.name)).toEqual(['deliveries', DLQ_BOARD_NAME]);
    const [deliveries, dlq] = queues as [BoardQueue, BoardQueue];
    // A fresh job waits in BullMQ's prioritized set (priority 1; see FRESH_PRIORITY), which the board lists on its own.
    expect(deliveries.counts.prioritized).toBe(1);
    expect(deliveries.counts.waiting ?? 0).toBe(0);
    expect(deliveries.readOnlyMode).toBe(false);
    // Dead letters written by other tests of this file are there too.
    const dlqSize = await ctx.redis.zcard(ctx.keys.dlq);
    expect(dlqSize).toBeGreaterThanOrEqual(1);
    expect(dlq.counts).toEqual({ failed: dlqSize });
    expect(dlq.readOnlyMode).toBe(true);

    const listed = await boardQueues(api, `?activeQueue=${DLQ_BOARD_NAME}&status=failed&page=1&jobsPerPage=10`);
    const jobs = listed.find((q) => q.name === DLQ_BOARD_NAME)?.jobs ?? [];
    expect(jobs.length).toBe(dlqSize);
    // Newest first: the dead letter just made.
    expect(jobs[0]).toMatchObject({ id: deadId, name: 'board_dead', attempts: 1, isFailed: true });
    expect(jobs[0]?.failedReason).toBe('http_status: HTTP 422');
    expect((jobs[0]?.stacktrace as string[])[0]).toMatch(/^attempt 1 at .*: POST http:\/\/127\.0\.0\.1:\d+\/board -> HTTP 422 \(\d+ ms\)$/);
    expect(jobs[0]?.returnValue).toMatchObject({ reason: 'http_status', status: 422, attempts: [{ attempt: 1 }] });

    const one = await api.inject({ method: 'GET', url: `/admin/queues/api/queues/${DLQ_BOARD_NAME}/${deadId}` });
    expect(one.statusCode).toBe(200);
    expect(one.json()).toMatchObject({ status: 'failed', job: { id: deadId, data: { actionId: 'board_dead' } } });
    const logs = await api.inject({ method: 'GET', url: `/admin/queues/api/queues/${DLQ_BOARD_NAME}/${deadId}/logs` });
    expect((logs.json() as string[]).at(-1)).toContain(`action-relay dlq replay ${deadId}`);

    // Read-only: neither retry nor clean touches a dead letter.
    for (const url of [`/api/queues/${DLQ_BOARD_NAME}/${deadId}/retry`, `/api/queues/${DLQ_BOARD_NAME}/clean/failed`]) {
      const res = await api.inject({ method: 'PUT', url: `/admin/queues${url}` });
      expect(res.statusCode, url).toBe(405);
    }
    expect(await ctx.deadLetters.get(deadId)).not.toBeNull();

    // The delivery queue: nothing enqueued around the producer, no completed job run twice.
    const add = await api.inject({ method: 'POST', url: '/admin/queues/api/queues/deliveries/add', payload: { name: 'x', data: {} } });
    expect(add.statusCode).toBe(403);
    const retryCompleted = await api.inject({ method: 'PUT', url: `/admin/queues/api/queues/deliveries/${deadId}/retry` });
    expect(retryCompleted.statusCode).toBe(403);
    expect(await (await ctx.queue.getJob(deadId))?.getState()).toBe('completed');
    expect((await api.inject({ method: 'PUT', url: '/admin/queues/api/queues/deliveries/retry/completed' })).statusCode).toBe(403);
    // Nothing unfinished can be removed from the board: its journey would never get an outcome.
    for (const url of ['empty', 'obliterate', 'clean/delayed', 'clean/wait', `${waitingId}/clean`]) {
      expect((await api.inject({ method: 'PUT', url: `/admin/queues/api/queues/deliveries/${url}` })).statusCode, url).toBe(403);
    }
    expect((await boardQueues(api))[0]?.counts.prioritized).toBe(1);
    await ctx.queue.remove(waitingId);
  });
});

describe('queue board with QUEUE_PARTITIONS=2', () => {
  it('groups the delivery queue of each partition with its own dead letters', async () => {
    const config = testConfig({ QUEUE_PARTITIONS: '2' });
    const pctx = await testContext(config);
    const papi = await createApiServer({ ctx: pctx, sender: createHttpSender({ guard: pctx.egress }) });
    cleanups.push(async () => {
      await papi.close();
      await pctx.close();
      await removePrefixKeys(config);
    });
    const queues = await boardQueues(papi);
    expect(queues.map((q) => q.name)).toEqual([
      'partition-0:deliveries',
      `partition-0:${DLQ_BOARD_NAME}`,
      'partition-1:deliveries',
      `partition-1:${DLQ_BOARD_NAME}`,
    ]);

    await pctx.store.put({ id: 'p_dead', name: 'p dead', endpoint: { url: receiver.url, path: '/p', method: 'POST' } });
    receiver.handler = (_req, res) => res.writeHead(410).end();
    const worker = await startTestWorker(config);
    try {
      const { jobId } = await pctx.producer.enqueue({ actionId: 'p_dead', params: {} });
      await waitFor(() => pctx.deadLetters.get(jobId), 10_000, 'the dead letter');
    } finally {
      await worker.stop();
    }
    const compiled = await pctx.store.getCompiled('p_dead');
    const home = pctx.queues.forLimitKey(compiled?.limitKey ?? '').keys.index;
    const counts = Object.fromEntries((await boardQueues(papi)).map((q) => [q.name, q.counts.failed ?? 0]));
    expect(counts[`partition-${home}:${DLQ_BOARD_NAME}`]).toBe(1);
    expect(counts[`partition-${1 - home}:${DLQ_BOARD_NAME}`]).toBe(0);

    const add = await papi.inject({ method: 'POST', url: `/admin/queues/api/queues/partition-${home}%3Adeliveries/add`, payload: {} });
    expect(add.statusCode).toBe(403);
  });
});

describe('ADMIN_TOKEN', () => {
  const bearer = { authorization: `Bearer ${TOKEN}` };

  it('guards the board, its assets and its API; the bearer token opens them', async () => {
    for (const url of ['/admin/queues', '/admin/queues/', '/admin/queues/api/queues', '/admin/queues/static/images/logo.svg']) {
      const res = await guarded.inject({ method: 'GET', url });
      expect(res.statusCode, url).toBe(401);
      expect(res.json().error.code).toBe('unauthorized');
    }
    expect((await guarded.inject({ method: 'GET', url: '/admin/queues', headers: bearer })).statusCode).toBe(200);
    expect((await boardQueues(guarded, '', bearer)).map((q) => q.name)).toEqual(['deliveries', DLQ_BOARD_NAME]);
    const wrong = await guarded.inject({ method: 'GET', url: '/admin/queues', headers: { authorization: `Bearer ${TOKEN}x` } });
    expect(wrong.statusCode).toBe(401);
  });

  it('a percent-encoded path reaches the same route, so it is guarded too', async () => {
    expect((await guarded.inject({ method: 'GET', url: '/%61dmin/queues/api/queues' })).statusCode).toBe(401);
    expect((await guarded.inject({ method: 'GET', url: '/%76%31/stats' })).statusCode).toBe(401);
    expect((await guarded.inject({ method: 'GET', url: '/%76%31/stats', headers: bearer })).statusCode).toBe(200);
  });

  it('?token= once gives a browser an HttpOnly, SameSite=Strict session cookie', async () => {
    const login = await guarded.inject({ method: 'GET', url: `/admin/queues/queue/deliveries?status=waiting&token=${TOKEN}` });
    expect(login.statusCode).toBe(303);
    expect(login.headers.location).toBe('/admin/queues/queue/deliveries?status=waiting');
    const setCookie = String(login.headers['set-cookie']);
    expect(setCookie).toMatch(/^action_relay_admin=\d+\.[\w-]+\.[\w-]+; Path=\/; HttpOnly; SameSite=Strict; Max-Age=43200$/);
    expect(setCookie).not.toContain(TOKEN);
    const cookie = setCookie.split(';')[0] as string;

    expect((await guarded.inject({ method: 'GET', url: '/admin/queues', headers: { cookie } })).statusCode).toBe(200);
    expect((await guarded.inject({ method: 'GET', url: '/admin/queues/static/images/logo.svg', headers: { cookie } })).statusCode).toBe(
      200,
    );
    expect((await boardQueues(guarded, '', { cookie })).length).toBe(2);
    // The console's page reads the API with it (Path=/); a change needs the console's header as well.
    expect((await guarded.inject({ method: 'GET', url: '/v1/stats', headers: { cookie } })).statusCode).toBe(200);
    expect((await guarded.inject({ method: 'POST', url: '/v1/dlq/purge', headers: { cookie }, payload: { all: true } })).statusCode).toBe(
      401,
    );

    const tampered = cookie.replace(/\.(.)/, (_m, c: string) => `.${c === 'A' ? 'B' : 'A'}`);
    expect((await guarded.inject({ method: 'GET', url: '/admin/queues', headers: { cookie: tampered } })).statusCode).toBe(401);
    const longer = cookie.replace(/=(\d+)\./, (_m, exp: string) => `=${Number(exp) + 1000}.`);
    expect((await guarded.inject({ method: 'GET', url: '/admin/queues', headers: { cookie: longer } })).statusCode).toBe(401);
    const badLogin = await guarded.inject({ method: 'GET', url: `/admin/queues?token=${TOKEN}x` });
    expect(badLogin.statusCode).toBe(401);
    expect(badLogin.headers['set-cookie']).toBeUndefined();
  });

  it('leaves the health routes and the docs open', async () => {
    for (const url of ['/healthz', '/docs', '/docs/json']) {
      expect((await guarded.inject({ method: 'GET', url })).statusCode, url).toBe(200);
    }
  });
});
