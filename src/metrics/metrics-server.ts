import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';
import type { RedisHealth } from '../redis/redis-health.js';

export interface MetricsServerChecks {
  /** Liveness: false once the process is stopping. */
  alive: () => boolean;
  /** Readiness: Redis answers (bounded in time by the check itself). */
  ready: () => Promise<RedisHealth>;
}

const json = (status: string, extra: Record<string, unknown> = {}) => JSON.stringify({ status, ...extra });

/** The worker's small listener: GET /metrics, GET /healthz (liveness) and GET /readyz (Redis answers). */
export async function startMetricsServer(registry: Registry, port: number, host: string, checks: MetricsServerChecks): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path === '/metrics') {
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        () => res.writeHead(500).end('metrics unavailable\n'),
      );
      return;
    }
    if (path === '/healthz') {
      const ok = checks.alive();
      res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' }).end(json(ok ? 'ok' : 'stopping'));
      return;
    }
    if (path === '/readyz') {
      void checks.ready().then((h) => {
        const body = h.ok ? json('ready') : JSON.stringify({ error: { code: 'redis_unavailable', message: h.reason } });
        res.writeHead(h.ok ? 200 : 503, { 'content-type': 'application/json' }).end(body);
      });
      return;
    }
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"code":"not_found","message":"not found"}}');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}
