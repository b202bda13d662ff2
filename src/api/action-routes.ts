import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { RelayContext } from '../context/relay-context.js';
import type { HttpSender } from '../delivery/http-sender.js';
import type { TokenProvider } from '../delivery/token-provider.js';
import { describeRequest, prepareRequest } from '../delivery/prepare-request.js';
import { ValidationError, RelayError } from '../errors/errors.js';
import { formatIssues } from '../actions/param-validator.js';
import { sendError } from './api-errors.js';
import { jsonDepthExceeds, MAX_JSON_DEPTH } from './json-body.js';

/** Body of POST /v1/actions/:id/preview and /test. */
export const tryBodySchema = z.strictObject({
  params: z.record(z.string(), z.unknown()).default({}),
  context: z.record(z.string(), z.unknown()).default({}),
});

function parseTryBody(body: unknown) {
  const parsed = tryBodySchema.safeParse(body ?? {});
  if (!parsed.success) throw new ValidationError('invalid request', formatIssues(parsed.error, '', body));
  return parsed.data;
}

/** A third party's answer as /test shows it: parsed when JSON, else text, with a note when JSON is shown as text. */
function decodeBody(
  buf: Buffer,
  headers: Record<string, string | string[]>,
  redact: (s: string) => string,
): { body: unknown; note?: string } {
  const text = redact(buf.toString('utf8'));
  const type = String(headers['content-type'] ?? '');
  if (!type.includes('json')) return { body: text };
  // Parsed, a body as deep as 100 000 "[" would overflow the stack when the answer is serialized: a 500.
  if (jsonDepthExceeds(text, MAX_JSON_DEPTH)) {
    return { body: text, note: `the JSON body is nested deeper than ${MAX_JSON_DEPTH} levels: shown as text` };
  }
  try {
    return { body: JSON.parse(text) as unknown };
  } catch {
    return { body: text };
  }
}

export function registerActionRoutes(app: FastifyInstance, ctx: RelayContext, sender: HttpSender, tokens?: TokenProvider): void {
  const { store } = ctx;

  app.put<{ Params: { id: string } }>('/v1/actions/:id', async (req, reply) => {
    const body = req.body as Record<string, unknown> | null;
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      throw new ValidationError('invalid action definition', [{ path: '', message: 'expected a JSON object' }]);
    }
    if (body.id !== undefined && body.id !== req.params.id) {
      throw new ValidationError('invalid action definition', [{ path: 'id', message: `does not match the URL id "${req.params.id}"` }]);
    }
    const saved = await store.put({ ...body, id: req.params.id });
    return reply.code(saved.created ? 201 : 200).send({ id: saved.id, version: saved.version });
  });

  app.get('/v1/actions', async () => {
    const all = await store.list();
    return {
      items: all.map((a) => ({
        id: a.definition.id,
        version: a.version,
        updatedAt: new Date(a.updatedAt).toISOString(),
        definition: a.definition,
      })),
    };
  });

  app.get<{ Params: { id: string } }>('/v1/actions/:id', async (req, reply) => {
    const a = await store.get(req.params.id);
    if (!a) return sendError(reply, 404, 'not_found', `action "${req.params.id}" is not defined`);
    return { id: a.definition.id, version: a.version, updatedAt: new Date(a.updatedAt).toISOString(), definition: a.definition };
  });

  app.delete<{ Params: { id: string } }>('/v1/actions/:id', async (req, reply) => {
    const removed = await store.delete(req.params.id);
    if (!removed) return sendError(reply, 404, 'not_found', `action "${req.params.id}" is not defined`);
    return { id: req.params.id, deleted: true };
  });

  /** Renders an action for preview or test; answers 404 / 400 itself. */
  async function render(id: string, body: unknown, mask: boolean) {
    const action = await store.getCompiled(id);
    if (!action) return null;
    const input = parseTryBody(body);
    const checked = action.validateParams(input.params);
    if (!checked.ok) throw new ValidationError('invalid params', checked.problems);
    const jobId = mask ? 'preview' : `test-${Date.now()}`;
    const scope = { params: checked.value, context: input.context, job: { id: jobId, attempt: 1, idempotencyKey: jobId } };
    return { action, prepared: await prepareRequest(action, scope, { secrets: ctx.secrets, tokens, mask }) };
  }

  app.post<{ Params: { id: string } }>('/v1/actions/:id/preview', async (req, reply) => {
    const r = await render(req.params.id, req.body, true);
    if (!r) return sendError(reply, 404, 'not_found', `action "${req.params.id}" is not defined`);
    return describeRequest(r.prepared, ctx.secrets.redact);
  });

  app.post<{ Params: { id: string } }>('/v1/actions/:id/test', async (req, reply) => {
    let r;
    try {
      r = await render(req.params.id, req.body, false);
    } catch (err: unknown) {
      if (err instanceof RelayError) return sendError(reply, 400, err.code, ctx.secrets.redact(err.message));
      throw err;
    }
    if (!r) return sendError(reply, 404, 'not_found', `action "${req.params.id}" is not defined`);
    const request = describeRequest(r.prepared, ctx.secrets.redact);
    const started = Date.now();
    try {
      const res = await sender.send(r.prepared.req, {
        timeoutMs: r.action.definition.endpoint.timeoutMs,
        readLimit: ctx.config.RESPONSE_MAX_BYTES,
        ...(r.prepared.tls ? { tls: r.prepared.tls } : {}),
      });
      const { body, note } = decodeBody(res.body, res.headers, ctx.secrets.redact);
      return {
        request,
        response: {
          status: res.status,
          // A third party may echo a credential back: mask it as the request is masked.
          headers: Object.fromEntries(
            Object.entries(res.headers).map(([k, v]) => [k, Array.isArray(v) ? v.map(ctx.secrets.redact) : ctx.secrets.redact(v)]),
          ),
          body,
          truncated: res.truncated,
          ...(note ? { note } : {}),
        },
        durationMs: Date.now() - started,
      };
    } catch (err: unknown) {
      if (err instanceof RelayError && !err.retryable) {
        // A fault of the definition, found before any answer (the egress policy refused the address,
        // TLS material that cannot be used): the action needs changing, not the third party.
        return sendError(reply, 400, err.code, ctx.secrets.redact(err.message), { request, durationMs: Date.now() - started });
      }
      const e = err instanceof RelayError ? err : null;
      return sendError(reply, 502, e?.reason ?? 'network', ctx.secrets.redact(e?.message ?? String(err)), {
        request,
        durationMs: Date.now() - started,
      });
    }
  });
}
