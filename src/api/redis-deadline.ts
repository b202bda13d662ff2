import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { RelayContext } from '../context/relay-context.js';
import { API_REDIS_WAIT_MS, checkRedis } from '../redis/redis-health.js';
import { sendError } from './api-errors.js';

/** Calls that read or write Redis: the API (/v1) and the console's own API. */
function talksToRedis(url: string): boolean {
  const path = url.split('?')[0] ?? url;
  return path.startsWith('/v1/') || path.startsWith('/console/api/');
}

/**
 * Bounds how long a call waits on a silent Redis (hung, or cut off by the network): BullMQ's
 * connection has no command timeout and retries without end, so a call would otherwise never
 * answer. A call still unanswered after `waitMs` checks whether Redis answers a PING (as /readyz
 * does); if not, it answers 503 `redis_unavailable` at once, else it waits `waitMs` more (a slow
 * call, a test request to an endpoint, is not cut short while Redis answers).
 *
 * The work the call started may still complete when Redis answers late: an enqueue answered 503
 * may have been made. Fastify drops the late result (the reply is sent), and a late error is
 * logged by it, never left unhandled.
 */
export function registerRedisDeadline(app: FastifyInstance, ctx: RelayContext, waitMs = API_REDIS_WAIT_MS): void {
  const timers = new WeakMap<FastifyRequest, NodeJS.Timeout>();
  const answered = new WeakSet<FastifyRequest>();
  const done = (req: FastifyRequest) => {
    answered.add(req);
    clearTimeout(timers.get(req));
  };

  app.addHook('onRequest', async (req, reply) => {
    if (!talksToRedis(req.url)) return;
    const arm = () => {
      const timer = setTimeout(() => void check(), waitMs);
      timer.unref();
      timers.set(req, timer);
    };
    const check = async () => {
      if (answered.has(req) || reply.sent) return;
      const health = await checkRedis(ctx.redis);
      if (answered.has(req) || reply.sent) return;
      if (health.ok) return arm();
      if (health.detail) ctx.logger.warn({ err: health.detail, url: req.url }, 'api call: redis unavailable');
      else ctx.logger.warn({ url: req.url }, 'api call: redis unavailable');
      void sendError(
        reply,
        503,
        'redis_unavailable',
        `${health.reason}: the outcome of this call is unknown; retry it (an enqueue retried with the same idempotencyKey is not made twice)`,
      );
    };
    arm();
  });
  app.addHook('onSend', async (req, _reply, payload) => {
    done(req);
    return payload;
  });
  app.addHook('onResponse', async (req) => done(req));
  app.addHook('onRequestAbort', async (req) => done(req));
}
