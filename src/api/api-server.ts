import Fastify, { type FastifyInstance } from 'fastify';
import { createContextTokens, type RelayContext } from '../context/relay-context.js';
import type { HttpSender } from '../delivery/http-sender.js';
import { isLoopbackAddress } from '../delivery/egress-guard.js';
import { InvalidParamsError, ManagedByFilesError, ValidationError, coerceError } from '../errors/errors.js';
import { boundProblems, sendError } from './api-errors.js';
import { redisRefusal } from '../redis/redis-refusal.js';
import { registerActionRoutes } from './action-routes.js';
import { registerJobRoutes } from './job-routes.js';
import { registerDlqRoutes } from './dlq-routes.js';
import { registerAccessControl, setSecurityHeaders } from './access-control.js';
import { loadTokensFile, tokenTable } from './api-tokens.js';
import { registerQueueBoard } from './queue-board.js';
import { registerApiDocs } from './openapi.js';
import { checkRedis } from '../redis/redis-health.js';
import { registerConsole } from './console-routes.js';
import { registerRedisDeadline } from './redis-deadline.js';

/** Codes of the errors fastify answers before routing, as the API names them (docs/api.md "Errors"). */
const FRAMEWORK_CODES: Record<string, string> = {
  FST_ERR_BAD_URL: 'bad_url',
  FST_ERR_MAX_PARAM_LENGTH: 'path_parameter_too_long',
};

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
export function assertSafeBind(host: string, token: string | undefined): void {
  if (!token && host !== 'localhost' && !isLoopbackAddress(host)) {
    throw new Error(`HOST=${host} is not loopback: set ADMIN_TOKEN or API_TOKENS_FILE to expose the API, or bind to 127.0.0.1`);
  }
}

export async function createApiServer(deps: ApiServerDeps): Promise<FastifyInstance> {
  const { ctx } = deps;
  const app = Fastify({
    logger: false,
    bodyLimit: deps.bodyLimit ?? 5 * 1024 * 1024,
    // Errors fastify meets before routing (a malformed percent-encoding...): answered in the
    // documented shape with the security headers, as no hook runs for them.
    frameworkErrors: (err, _req, reply) => {
      setSecurityHeaders(reply);
      const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 400;
      const code = FRAMEWORK_CODES[err.code] ?? (err.code || 'bad_request').toLowerCase();
      return sendError(reply, status, code, err.message);
    },
  });
  const tokens = tokenTable(ctx.config.API_TOKENS_FILE ? await loadTokensFile(ctx.config.API_TOKENS_FILE) : [], ctx.config.ADMIN_TOKEN);
  const access = registerAccessControl(app, {
    tokens,
    sessionKey: ctx.config.ADMIN_TOKEN,
    allowedHosts: ctx.config.API_ALLOWED_HOSTS,
    logger: ctx.logger,
  });

  registerRedisDeadline(app, ctx);

  app.setErrorHandler((err: unknown, req, reply) => {
    if (err instanceof ValidationError) return sendError(reply, 400, err.code, err.message, boundProblems(err.problems));
    // A value that cannot be sent (preview of params or context that no request can carry).
    if (err instanceof InvalidParamsError) return sendError(reply, 400, err.code, err.message, boundProblems(err.problems));
    if (err instanceof ManagedByFilesError) return sendError(reply, 409, err.code, err.message, { file: err.file });
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
  // Liveness above; readiness says within READY_TIMEOUT_MS whether Redis answers.
  app.get('/readyz', async (_req, reply) => {
    const health = await checkRedis(ctx.redis);
    if (health.ok) return { status: 'ready' };
    // The driver's text may name hosts and ports: it goes to the log, the short reason to whoever asks.
    if (health.detail) ctx.logger.warn({ err: health.detail }, 'readiness check: redis unavailable');
    return sendError(reply, 503, 'redis_unavailable', health.reason);
  });
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', ctx.metrics.registry.contentType);
    return ctx.metrics.registry.metrics();
  });

  registerActionRoutes(app, ctx, deps.sender, createContextTokens(ctx, deps.sender));
  registerJobRoutes(app, ctx);
  registerDlqRoutes(app, ctx);
  await registerQueueBoard(app, ctx);
  await registerConsole(app, ctx, { session: access.session, scopesOf: (req) => access.principalOf(req)?.scopes ?? [] });
  await registerApiDocs(app, { bearer: tokens.length > 0 });
  return app;
}
