import { createServer, type IncomingMessage, type Server } from 'node:http';
import { randomUUID } from 'node:crypto';

/** A loopback stand-in for third-party APIs: an SMS provider and a CRM. */
export interface MockReceiver {
  server: Server;
  url: string;
  counts: { requests: number; ok: number; failed: number; rejected: number };
  close(): Promise<void>;
}

export interface MockReceiverOptions {
  port?: number;
  /** Bind address; a container sets 0.0.0.0. @defaultValue 127.0.0.1 */
  host?: string;
  /** Share of requests answered 503, to show retries. @defaultValue 0.05 */
  failureRate?: number;
  /**
   * Share of CRM upserts refused with 422 (not retried: they die), so that the console's dead
   * letters have something to replay. @defaultValue 0.05
   */
  rejectRate?: number;
  random?: () => number;
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export async function startMockReceiver(opts: MockReceiverOptions = {}): Promise<MockReceiver> {
  const random = opts.random ?? Math.random;
  const failureRate = opts.failureRate ?? 0.05;
  const rejectRate = opts.rejectRate ?? 0.05;
  const counts = { requests: 0, ok: 0, failed: 0, rejected: 0 };
  const server = createServer((req, res) => {
    void readBody(req).then((text) => {
      counts.requests++;
      if (random() < failureRate) {
        counts.failed++;
        // No Retry-After: with one, a 503 pauses the whole host for every action (back-pressure),
        // and a random 5% of them would keep the demo's one receiver paused most of the time.
        res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":"busy, try again"}');
        return;
      }
      const url = req.url ?? '/';
      if (url.startsWith('/crm/') && random() < rejectRate) {
        counts.rejected++;
        res.writeHead(422, { 'content-type': 'application/json' }).end('{"error":"contact is locked for changes","code":"locked"}');
        return;
      }
      counts.ok++;
      if (url.startsWith('/sms/')) {
        const body = text ? (JSON.parse(text) as { text?: string }) : {};
        const segments = Math.max(1, Math.ceil((body.text?.length ?? 0) / 160));
        res.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify({ messageId: randomUUID(), segments }));
        return;
      }
      if (url.startsWith('/crm/')) {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id: url.split('/')[3] ?? '', updated: true }));
        return;
      }
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  const host = !opts.host || opts.host === '0.0.0.0' || opts.host === '::' ? '127.0.0.1' : opts.host;
  return {
    server,
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    counts,
    close: () => new Promise((r) => server.close(() => r())),
  };
}
