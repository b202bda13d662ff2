// The third party of the bench: a loopback HTTP server in a process of its own that answers every
// request 200 {"id":"..."} at once and records when each arrived. Started by run.ts, which reads
// the port from its first stdout line and asks for figures on /_bench/summary.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { benchClock } from './payload.js';
import { maxInWindow, percentile } from './stats.js';

/** A body the bench built opens with `{"t":<enqueue time on benchClock>`. */
const ENQUEUED_AT = /^\{"t":([0-9.]+)[,}]/;

let count = 0;
let arrivals: number[] = [];
let latencies: number[] = [];

export interface SinkSummary {
  count: number;
  firstAt: number | null;
  lastAt: number | null;
  /** Most requests in any sliding window of 1 s. */
  peak1s: number;
  /** Enqueue-to-arrival of the requests whose body carried `t`, in ms. */
  latency: { n: number; p50: number | null; p99: number | null; max: number | null };
}

function summary(): SinkSummary {
  const sorted = [...latencies].sort((a, b) => a - b);
  return {
    count,
    firstAt: arrivals.length > 0 ? (arrivals[0] as number) : null,
    lastAt: arrivals.length > 0 ? (arrivals[arrivals.length - 1] as number) : null,
    peak1s: maxInWindow(arrivals, 1000),
    latency: {
      n: sorted.length,
      p50: percentile(sorted, 0.5),
      p99: percentile(sorted, 0.99),
      max: sorted.length > 0 ? (sorted[sorted.length - 1] as number) : null,
    },
  };
}

function control(req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://sink');
  if (url.pathname === '/_bench/reset') {
    count = 0;
    arrivals = [];
    latencies = [];
    res.writeHead(204).end();
    return;
  }
  if (url.pathname === '/_bench/summary') {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(summary()));
    return;
  }
  if (url.pathname === '/_bench/arrivals') {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(arrivals));
    return;
  }
  res.writeHead(404).end();
}

const server = createServer((req, res) => {
  if (req.url?.startsWith('/_bench/')) {
    req.resume();
    control(req, res);
    return;
  }
  if (req.url === '/v1/traces') {
    // OTLP exports of traced workers (the relayTraced target): answered, not counted as deliveries.
    req.resume();
    res.writeHead(200, { 'content-type': 'application/x-protobuf', 'content-length': 0 }).end();
    return;
  }
  let head: Buffer | undefined;
  req.on('data', (chunk: Buffer) => {
    head ??= chunk;
  });
  req.on('end', () => {
    const at = benchClock();
    count += 1;
    arrivals.push(at);
    const m = head ? ENQUEUED_AT.exec(head.toString('latin1', 0, Math.min(head.length, 48))) : null;
    if (m) latencies.push(at - Number(m[1]));
    const body = `{"id":"m-${count}"}`;
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  const addr = server.address();
  process.stdout.write(`${JSON.stringify({ port: typeof addr === 'object' && addr ? addr.port : 0 })}\n`);
});
process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
