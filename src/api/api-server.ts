import { createHash, timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import { createContextTokens, type RelayContext } from '../context/relay-context.js';
import type { HttpSender } from '../delivery/http-sender.js';
import { isLoopbackAddress } from '../delivery/egress-guard.js';
import { ValidationError, coerceError } from '../errors/errors.js';
import { sendError } from './api-errors.js';
import { redisRefusal } from '../redis/redis-refusal.js';
import { registerActionRoutes } from './action-routes.js';
import { registerJobRoutes } from './job-routes.js';
import { registerDlqRoutes } from './dlq-routes.js';
import { createAdminSession } from './admin-session.js';
import { registerQueueBoard } from './queue-board.js';
import { registerApiDocs } from './openapi.js';

export interface ApiServerDeps {
  ctx: RelayContext;
  /** Sends the real request of POST /v1/actions/:id/test. */
  sender: HttpSender;
  /** Largest request body accepted, in bytes. @defaultValue 5 MiB */
  bodyLimit?: number;
}

/**
 * Refuses to expose an unauthenticated API beyond this machine. Loopback is an IP address in
 * 127.0.0.0/8 or ::1, or the name localhost: not any name that merely starts with "127.".
 */
export function assertSafeBind(host: string, adminToken: string | undefined): void {
  if (!adminToken && host !== 'localhost' && !isLoopbackAddress(host)) {
    throw new Error(`HOST=${host} is not loopback: set ADMIN_TOKEN to expose the API, or bind to 127.0.0.1`);
  }
}

/** Compared as SHA-256 digests, so that the time taken says nothing of the token's length either. */
const digest = (s: string) => createHash('sha256').update(s).digest();

function tokenMatches(header: string | undefined, token: string): boolean {
  if (!header?.startsWith('Bearer ')) return false;
  return timingSafeEqual(digest(header.slice(7)), digest(token));
}

export async function createApiServer(deps: ApiServerDeps): Promise<FastifyInstance> {
  const { ctx } = deps;
  const app = Fastify({ logger: false, bodyLimit: deps.bodyLimit ?? 5 * 1024 * 1024 });
  const token = ctx.config.ADMIN_TOKEN;

  const adminSession = token ? createAdminSession(token) : undefined;
  app.addHook('onRequest', async (req, reply) => {
    if (!token) return;
    // The route matched, not the raw URL: "/%76%31/dlq" is routed to /v1/dlq too.
    const path = req.routeOptions.url ?? req.url;
    const admin = path.startsWith('/admin/');
    if (!path.startsWith('/v1/') && !admin) return;
    if (tokenMatches(req.headers.authorization, token)) return;
    // A browser cannot send the header with bull-board's pages: /admin/* also takes the session cookie.
    if (admin && adminSession?.accepts(req)) return;
    if (admin && adminSession?.login(req, reply)) return reply;
    const hint = admin ? ' (in a browser, open /admin/queues?token=<ADMIN_TOKEN> once)' : '';
    return sendError(reply, 401, 'unauthorized', `missing or wrong Authorization: Bearer token${hint}`);
  });

  app.setErrorHandler((err: unknown, req, reply) => {
    if (err instanceof ValidationError) return sendError(reply, 400, err.code, err.message, err.problems);
    const e = err as { statusCode?: number; code?: string; message?: string };
    if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) {
      const code =
        e.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || e.code === 'FST_ERR_CTP_EMPTY_JSON_BODY'
          ? 'invalid_json'
          : (e.code ?? 'bad_request').toLowerCase();
      return sendError(reply, e.statusCode, code, e.message ?? 'bad request');
    }
    const refusal = redisRefusal(err);
    if (refusal) {
      ctx.logger.warn({ err: coerceError(err).message, url: req.url }, 'redis refused the request');
      return sendError(reply, 503, 'redis_unavailable', refusal);
    }
    ctx.logger.error({ err: ctx.secrets.redact(coerceError(err).message), url: req.url }, 'api error');
    return sendError(reply, 500, 'internal', 'internal error');
  });
  app.setNotFoundHandler((req, reply) => sendError(reply, 404, 'not_found', `no route ${req.method} ${req.url}`));

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    try {
      await ctx.redis.ping();
      return { status: 'ready' };
    } catch (err: unknown) {
      return sendError(reply, 503, 'redis_unavailable', coerceError(err).message);
    }
  });
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', ctx.metrics.registry.contentType);
    return ctx.metrics.registry.metrics();
  });

  registerActionRoutes(app, ctx, deps.sender, createContextTokens(ctx, deps.sender));
  registerJobRoutes(app, ctx);
  registerDlqRoutes(app, ctx);
  await registerQueueBoard(app, ctx);
  await registerApiDocs(app, { bearer: token !== undefined });
  return app;
}
