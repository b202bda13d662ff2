import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';

/** The worker's small listener: GET /metrics and GET /healthz. */
export async function startMetricsServer(registry: Registry, port: number, host: string, health: () => boolean): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url === '/metrics') {
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        () => res.writeHead(500).end('metrics unavailable\n'),
      );
      return;
    }
    if (req.url === '/healthz') {
      const ok = health();
      res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify({ status: ok ? 'ok' : 'stopping' }));
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
