import { createServer } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTracing } from '../../src/telemetry/start-tracing.js';
import { readTracingSettings } from '../../src/telemetry/tracing-config.js';

/** A loopback OTLP/HTTP receiver recording what each export request carried. */
const received: { path: string; contentType: string; body: Buffer }[] = [];
const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    received.push({ path: req.url ?? '', contentType: req.headers['content-type'] ?? '', body: Buffer.concat(chunks) });
    res.writeHead(200).end();
  });
});
let endpoint = '';

beforeAll(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const addr = server.address();
  endpoint = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

describe('OTLP export', () => {
  it.each([
    ['http/protobuf', 'application/x-protobuf'],
    ['http/json', 'application/json'],
  ] as const)('%s: spans reach <endpoint>/v1/traces as %s', async (protocol, contentType) => {
    // The exporters read the endpoint from process.env, as the specification has it.
    const saved = process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = endpoint;
    try {
      const before = received.length;
      const settings = readTracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: protocol });
      const tracing = await startTracing({ serviceName: 'otlp-test', serviceVersion: '0.0.0', settings });
      expect(tracing.enabled).toBe(true);
      const span = tracing.enqueueSpan({ actionId: `probe_${protocol.replace('/', '_')}`, jobId: 'j1' });
      expect(span.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      span.end();
      await tracing.shutdown();
      const mine = received.slice(before);
      expect(mine.map((r) => [r.path, r.contentType])).toEqual([['/v1/traces', contentType]]);
      // The span's name travels as UTF-8 in both encodings.
      expect(mine[0]?.body.toString('utf8')).toContain(`enqueue probe_${protocol.replace('/', '_')}`);
    } finally {
      if (saved === undefined) delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
      else process.env.OTEL_EXPORTER_OTLP_ENDPOINT = saved;
    }
  });
});
