import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { actionDefinitionSchema, paramSpecSchema } from '../actions/action-schema.js';
import { dlqFilterSchema } from '../queue/dead-letters.js';
import { replayRequestSchema } from '../queue/dlq-operations.js';
import { jobInputSchema } from '../queue/job-schema.js';
import { MAX_BATCH } from '../queue/producer.js';
import { VERSION } from '../version.js';
import { tryBodySchema } from './action-routes.js';
import { listQuerySchema, purgeRequestSchema } from './dlq-routes.js';
import {
  actionDeletedSchema,
  actionListSchema,
  attemptRecordSchema,
  batchResultSchema,
  deadLetterRecordSchema,
  describedRequestSchema,
  dlqPageSchema,
  dlqSummarySchema,
  enqueueResultSchema,
  errorBodySchema,
  healthSchema,
  jobStatusSchema,
  purgedSchema,
  readySchema,
  replayResultSchema,
  savedActionSchema,
  statsSchema,
  storedActionSchema,
  testResultSchema,
} from './response-schemas.js';

/** Swagger UI; the document itself is at `${DOCS_PATH}/json` (and `/yaml`). */
export const DOCS_PATH = '/docs';

type JsonSchema = Record<string, unknown>;

/** The parts of an OpenAPI 3.1 document this file writes. */
export interface OpenApiDocument {
  openapi: '3.1.0';
  info: { title: string; version: string; description: string; license: { name: string; identifier: string } };
  tags: { name: string; description: string }[];
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, JsonSchema>; securitySchemes?: Record<string, JsonSchema> };
}

interface Operation {
  operationId: string;
  summary: string;
  tags: string[];
  parameters?: JsonSchema[];
  requestBody?: JsonSchema;
  responses: Record<string, JsonSchema>;
  security?: Record<string, string[]>[];
}

/**
 * Every schema that crosses the API, by the component name it gets. Request bodies are the zod
 * schemas the routes parse with; responses are those of response-schemas.ts.
 */
const COMPONENTS = {
  ActionDefinition: actionDefinitionSchema,
  ParamSpec: paramSpecSchema,
  ActionTryRequest: tryBodySchema,
  JobInput: jobInputSchema,
  JobBatchRequest: z.strictObject({ jobs: z.array(jobInputSchema).max(MAX_BATCH) }),
  DlqFilter: dlqFilterSchema,
  DlqReplayRequest: replayRequestSchema,
  DlqPurgeRequest: purgeRequestSchema,
  Error: errorBodySchema,
  Health: healthSchema,
  Ready: readySchema,
  SavedAction: savedActionSchema,
  StoredAction: storedActionSchema,
  ActionList: actionListSchema,
  ActionDeleted: actionDeletedSchema,
  DescribedRequest: describedRequestSchema,
  TestResult: testResultSchema,
  EnqueueResult: enqueueResultSchema,
  BatchResult: batchResultSchema,
  JobStatus: jobStatusSchema,
  DlqSummary: dlqSummarySchema,
  DlqPage: dlqPageSchema,
  AttemptRecord: attemptRecordSchema,
  DeadLetterRecord: deadLetterRecordSchema,
  DlqReplayResult: replayResultSchema,
  Purged: purgedSchema,
  Stats: statsSchema,
} satisfies Record<string, z.ZodType>;

type ComponentName = keyof typeof COMPONENTS | 'ActionDefinitionBody';

const ref = (name: ComponentName) => ({ $ref: `#/components/schemas/${name}` });
const SHARED = '__shared';

/** JSON Schema (2020-12, the dialect of OpenAPI 3.1) of every component, as bodies are written (`io: 'input'`: defaults optional). */
function componentSchemas(): Record<string, JsonSchema> {
  const registry = z.registry<{ id: string }>();
  for (const [id, schema] of Object.entries(COMPONENTS)) registry.add(schema, { id });
  const out = z.toJSONSchema(registry, {
    io: 'input',
    target: 'draft-2020-12',
    uri: (id) => `#/components/schemas/${id}`,
    // A transform added to a schema later documents as "any value" rather than failing the API's start.
    unrepresentable: 'any',
  });
  const schemas: Record<string, JsonSchema> = {};
  for (const [id, schema] of Object.entries(out.schemas)) {
    const { $schema: _dialect, $id: _id, $defs, ...rest } = schema as JsonSchema;
    if (id === SHARED) {
      // A recursive schema that is not a component: zod puts it under __shared; make each its own component.
      for (const [name, def] of Object.entries(($defs ?? {}) as Record<string, JsonSchema>)) schemas[`${SHARED}_${name}`] = def;
    } else {
      schemas[id] = $defs ? { ...rest, $defs } : rest;
    }
  }
  const json = JSON.stringify(schemas).replaceAll(`#/components/schemas/${SHARED}#/$defs/`, `#/components/schemas/${SHARED}_`);
  return JSON.parse(json) as Record<string, JsonSchema>;
}

const json = (schema: JsonSchema, description: string) => ({ description, content: { 'application/json': { schema } } });
const errorResponse = (description: string) => json(ref('Error'), description);

function pathParam(name: string, description: string, schema: JsonSchema = { type: 'string' }) {
  return { name, in: 'path', required: true, description, schema };
}

/** The query of GET /v1/dlq as parameters, from the schema the route parses it with. */
function dlqQueryParameters(): JsonSchema[] {
  const schema = z.toJSONSchema(listQuerySchema, { io: 'input', unrepresentable: 'any' }) as { properties?: Record<string, JsonSchema> };
  const described: Record<string, string> = {
    actionId: 'only this action',
    reason: 'only this reason (http_status, timeout, network, capped, ...)',
    status: 'only this HTTP status',
    since: 'failed at or after: ISO date-time or epoch ms',
    until: 'failed at or before: ISO date-time or epoch ms',
    limit: 'page size',
    cursor: 'the nextCursor of the previous page',
  };
  return Object.entries(schema.properties ?? {}).map(([name, s]) => ({
    name,
    in: 'query',
    required: false,
    ...(described[name] ? { description: described[name] } : {}),
    schema: s,
  }));
}

export interface OpenApiOptions {
  /** The server has ADMIN_TOKEN: every /v1 route needs `Authorization: Bearer`. */
  bearer: boolean;
}

/** The OpenAPI 3.1 document of the routes in docs/api.md, generated from the zod schemas. */
export function buildOpenApiDocument(opts: OpenApiOptions): OpenApiDocument {
  const schemas = componentSchemas();
  const definition = schemas.ActionDefinition as JsonSchema & { required?: string[]; properties: { id: JsonSchema } };
  // PUT /v1/actions/:id takes the id from the URL: in the body it may be left out (and must match when given).
  schemas.ActionDefinitionBody = { ...definition, required: (definition.required ?? []).filter((k) => k !== 'id') };

  const v1 = (op: Operation): Operation => {
    // Every body is JSON: any other Content-Type is refused before the route runs.
    const typed: Operation = op.requestBody
      ? { ...op, responses: { ...op.responses, '415': errorResponse('`unsupported_media_type`: the body is not application/json') } }
      : op;
    if (!opts.bearer) return typed;
    return {
      ...typed,
      security: [{ bearerAuth: [] }],
      responses: {
        ...typed.responses,
        '401': errorResponse('missing or wrong Authorization: Bearer token'),
        '403': errorResponse('`forbidden`: the token lacks the scope this route needs (the message names it)'),
      },
    };
  };
  const body = (name: ComponentName, required = true) => ({ required, content: { 'application/json': { schema: ref(name) } } });
  const actionId = pathParam('id', 'the action id', definition.properties.id);
  const jobId = pathParam('jobId', 'the job id');
  const invalid = errorResponse('invalid request: `details` lists `{ path, message }` for each bad field');
  const noAction = errorResponse('the action is not defined');

  const paths: OpenApiDocument['paths'] = {
    '/healthz': {
      get: { operationId: 'health', summary: 'Process alive', tags: ['health'], responses: { '200': json(ref('Health'), 'alive') } },
    },
    '/readyz': {
      get: {
        operationId: 'ready',
        summary: 'Redis reachable',
        tags: ['health'],
        responses: { '200': json(ref('Ready'), 'ready'), '503': errorResponse('Redis unreachable (code redis_unavailable)') },
      },
    },
    '/metrics': {
      get: {
        operationId: 'metrics',
        summary: 'Prometheus metrics',
        tags: ['health'],
        responses: { '200': { description: 'Prometheus text format', content: { 'text/plain': { schema: { type: 'string' } } } } },
      },
    },
    '/v1/actions': {
      get: v1({
        operationId: 'listActions',
        summary: 'Every action definition',
        tags: ['actions'],
        responses: { '200': json(ref('ActionList'), 'the actions') },
      }),
    },
    '/v1/actions/{id}': {
      put: v1({
        operationId: 'putAction',
        summary: 'Create or replace an action definition',
        tags: ['actions'],
        parameters: [actionId],
        requestBody: body('ActionDefinitionBody'),
        responses: {
          '200': json(ref('SavedAction'), 'replaced'),
          '201': json(ref('SavedAction'), 'created'),
          '400': errorResponse('invalid definition: `details` lists every problem with its path'),
          '409': errorResponse('`managed_by_files`: the action comes from ACTIONS_DIR; `details.file` names the file'),
        },
      }),
      get: v1({
        operationId: 'getAction',
        summary: 'One action definition',
        tags: ['actions'],
        parameters: [actionId],
        responses: { '200': json(ref('StoredAction'), 'the action'), '404': noAction },
      }),
      delete: v1({
        operationId: 'deleteAction',
        summary: 'Delete an action definition',
        tags: ['actions'],
        parameters: [actionId],
        responses: {
          '200': json(ref('ActionDeleted'), 'deleted'),
          '404': noAction,
          '409': errorResponse('`managed_by_files`: the action comes from ACTIONS_DIR; `details.file` names the file'),
        },
      }),
    },
    '/v1/actions/{id}/preview': {
      post: v1({
        operationId: 'previewAction',
        summary: 'The request that would be sent (secrets masked); nothing is sent',
        tags: ['actions'],
        parameters: [actionId],
        requestBody: body('ActionTryRequest', false),
        responses: { '200': json(ref('DescribedRequest'), 'the request'), '400': invalid, '404': noAction },
      }),
    },
    '/v1/actions/{id}/test': {
      post: v1({
        operationId: 'testAction',
        summary: 'Send one real request now',
        tags: ['actions'],
        parameters: [actionId],
        requestBody: body('ActionTryRequest', false),
        responses: {
          '200': json(ref('TestResult'), 'the request and the answer, whatever its status'),
          '400': errorResponse(
            'invalid request (`details` lists each bad field), or a fault of the definition found before any answer: a blocked destination (`blocked_destination`, the egress policy refused the address), TLS material that cannot be used (`auth`); then `details` has the request and durationMs',
          ),
          '404': noAction,
          '502': errorResponse('no answer (timeout, network); `details` has the request and durationMs'),
        },
      }),
    },
    '/v1/jobs': {
      post: v1({
        operationId: 'enqueueJob',
        summary: 'Enqueue one job',
        tags: ['jobs'],
        requestBody: body('JobInput'),
        responses: {
          '202': json(ref('EnqueueResult'), 'enqueued (or deduplicated by its idempotency key)'),
          '400': errorResponse('invalid job or params: `details` names each bad field'),
          '503': errorResponse('Redis refused the write (out of memory, read-only replica, unreachable): code redis_unavailable'),
        },
      }),
    },
    '/v1/jobs/batch': {
      post: v1({
        operationId: 'enqueueJobs',
        summary: `Enqueue up to ${MAX_BATCH} jobs; each gets its own result, in input order`,
        tags: ['jobs'],
        requestBody: body('JobBatchRequest'),
        responses: {
          '202': json(ref('BatchResult'), 'one result or error per job'),
          '400': invalid,
          '503': errorResponse('Redis refused the write (out of memory, read-only replica, unreachable): code redis_unavailable'),
        },
      }),
    },
    '/v1/jobs/{jobId}': {
      get: v1({
        operationId: 'getJob',
        summary: 'State of one job',
        tags: ['jobs'],
        parameters: [jobId],
        responses: { '200': json(ref('JobStatus'), 'the job'), '404': errorResponse('unknown job, or finished longer ago than kept') },
      }),
    },
    '/v1/dlq': {
      get: v1({
        operationId: 'listDeadLetters',
        summary: 'Dead letters, newest first, page by page',
        tags: ['dead letters'],
        parameters: dlqQueryParameters(),
        responses: { '200': json(ref('DlqPage'), 'one page'), '400': invalid },
      }),
    },
    '/v1/dlq/{jobId}': {
      get: v1({
        operationId: 'getDeadLetter',
        summary: 'The whole dead-letter record',
        tags: ['dead letters'],
        parameters: [jobId],
        responses: { '200': json(ref('DeadLetterRecord'), 'the record'), '404': errorResponse('no dead letter for this job') },
      }),
      delete: v1({
        operationId: 'deleteDeadLetter',
        summary: 'Delete one dead letter',
        tags: ['dead letters'],
        parameters: [jobId],
        responses: { '200': json(ref('Purged'), 'deleted ({ purged: 1 })'), '404': errorResponse('no dead letter for this job') },
      }),
    },
    '/v1/dlq/replay': {
      post: v1({
        operationId: 'replayDeadLetters',
        summary: 'Enqueue dead letters again (fresh attempts, current definition), spread at ratePerSecond',
        tags: ['dead letters'],
        requestBody: body('DlqReplayRequest'),
        responses: {
          '200': json(ref('DlqReplayResult'), '`{ replayed, jobIds }`, or `{ matched, jobIds }` for a dry run'),
          '400': invalid,
        },
      }),
    },
    '/v1/dlq/purge': {
      post: v1({
        operationId: 'purgeDeadLetters',
        summary: 'Delete the dead letters named or matching a filter',
        tags: ['dead letters'],
        requestBody: body('DlqPurgeRequest', false),
        responses: { '200': json(ref('Purged'), 'how many were deleted'), '400': invalid },
      }),
    },
    '/v1/stats': {
      get: v1({
        operationId: 'stats',
        summary: 'Queue counts per state and DLQ size',
        tags: ['jobs'],
        responses: { '200': json(ref('Stats'), 'the counts') },
      }),
    },
  };

  return {
    openapi: '3.1.0',
    info: {
      title: 'action-relay',
      version: VERSION,
      description: [
        "Delivers a journey engine's custom actions to third-party HTTP APIs.",
        'Errors are `{ "error": { "code", "message", "details"? } }`.',
        opts.bearer
          ? 'Every /v1 route needs `Authorization: Bearer <token>`: ADMIN_TOKEN, or an API_TOKENS_FILE token whose scopes (enqueue, read, replay, admin) open the route (403 `forbidden` otherwise).'
          : 'This server runs without ADMIN_TOKEN (loopback only): no authentication.',
        'Queues and dead letters in a browser: /admin/queues.',
      ].join('\n\n'),
      license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
    },
    tags: [
      { name: 'actions', description: 'Action definitions' },
      { name: 'jobs', description: 'Enqueueing and job state' },
      { name: 'dead letters', description: 'Inspection, replay and purge' },
      { name: 'health', description: 'Liveness, readiness, metrics' },
    ],
    paths,
    components: {
      schemas,
      ...(opts.bearer
        ? { securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', description: 'ADMIN_TOKEN or a scoped API token' } } }
        : {}),
    },
  };
}

/**
 * Serves the document at /docs/json and Swagger UI at /docs. Not behind ADMIN_TOKEN: the token
 * guards /v1/* and /admin/*, and the document holds only what this open-source repository already
 * publishes (no data, no configuration); "Try it out" still needs the token for /v1.
 */
export async function registerApiDocs(app: FastifyInstance, opts: OpenApiOptions): Promise<void> {
  const document = buildOpenApiDocument(opts);
  await app.register(fastifySwagger, {
    mode: 'static',
    // The plugin's type names OpenAPI 2.0 and 3.0 documents only; in static mode it serves any as given.
    specification: { document: document as unknown as fastifySwagger.StaticDocumentSpec['document'] },
  });
  await app.register(fastifySwaggerUi, { routePrefix: DOCS_PATH });
}
