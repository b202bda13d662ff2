import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:http';
import { describe, expect, it } from 'vitest';
import { freePort } from '../../src/redis/embedded-redis.js';
import { setupRun, trackRuns, waitFor } from '../support/harness.js';

/** One span as an OTLP/HTTP JSON export carries it, with its attributes flattened. */
interface ExportedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  service: string;
  attributes: Record<string, string | number | boolean>;
}

interface OtlpValue {
  stringValue?: string;
  intValue?: string | number;
  boolValue?: boolean;
  doubleValue?: number;
}
interface OtlpAttribute {
  key: string;
  value: OtlpValue;
}
interface OtlpExport {
  resourceSpans?: {
    resource?: { attributes?: OtlpAttribute[] };
    scopeSpans?: { spans?: (Omit<ExportedSpan, 'attributes' | 'service'> & { attributes?: OtlpAttribute[] })[] }[];
  }[];
}

const flatten = (attrs: OtlpAttribute[] = []) =>
  Object.fromEntries(
    attrs.map(({ key, value }) => [
      key,
      value.stringValue ?? (value.intValue !== undefined ? Number(value.intValue) : (value.boolValue ?? value.doubleValue ?? '')),
    ]),
  );

/** A loopback OTLP/HTTP receiver that takes JSON exports (OTEL_EXPORTER_OTLP_PROTOCOL=http/json). */
async function startOtlpReceiver() {
  const spans: ExportedSpan[] = [];
  const contentTypes: string[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      contentTypes.push(req.headers['content-type'] ?? '');
      if (req.url === '/v1/traces' && req.headers['content-type']?.startsWith('application/json')) {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as OtlpExport;
        for (const rs of body.resourceSpans ?? []) {
          const service = String(flatten(rs.resource?.attributes)['service.name'] ?? '');
          for (const ss of rs.scopeSpans ?? []) {
            for (const s of ss.spans ?? [])
              spans.push({ ...s, parentSpanId: s.parentSpanId ?? '', service, attributes: flatten(s.attributes) });
          }
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const addr = server.address();
  const url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  return { url, spans, contentTypes, close: () => new Promise<void>((r) => server.close(() => r())) };
}

const CALLER_TRACE = '0af7651916cd43dd8448eb211c80319c';
const CALLER_SPAN = 'b7ad6b7169203331';

describe('traces from the caller through api and worker to the third party', () => {
  const { children, cleanups } = trackRuns();

  it(
    'continues the caller trace: enqueue span, attempt spans, HTTP spans, and the traceparent the receiver sees',
    { timeout: 120_000 },
    async () => {
      const { receiver, config, ctx } = await setupRun(cleanups);
      const otlp = await startOtlpReceiver();
      cleanups.push(otlp.close);
      await ctx.store.put({
        id: 'traced',
        name: 'traced',
        endpoint: { url: receiver.url, path: '/hook', method: 'POST', query: { key: '{{params.key}}' } },
        parameters: { n: { type: 'integer', required: true }, key: { type: 'string' } },
        body: { n: '{{params.n}}' },
        retry: { maxAttempts: 3, backoff: { type: 'fixed', delayMs: 100 } },
      });
      await ctx.store.put({
        id: 'untraced',
        name: 'untraced',
        endpoint: { url: receiver.url, path: '/quiet', method: 'POST' },
        body: {},
        propagateTrace: false,
      });
      // The first request of job 1 gets a 503: its job has two attempts.
      let first = true;
      receiver.handler = (req, res) => {
        if (req.url.startsWith('/hook') && first) {
          first = false;
          res.writeHead(503).end();
          return;
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      };

      const port = await freePort();
      const env = {
        ...process.env,
        REDIS_URL: config.REDIS_URL,
        ACTION_RELAY_PREFIX: config.ACTION_RELAY_PREFIX,
        EGRESS_ALLOW_HOSTS: '127.0.0.1,localhost',
        METRICS_PORT: '0',
        PORT: String(port),
        HOST: '127.0.0.1',
        LOG_LEVEL: 'info',
        OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
        OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
        OTEL_BSP_SCHEDULE_DELAY: '100',
      };
      const start = (command: string): ChildProcess => {
        const child = spawn(process.execPath, ['--import', 'tsx', 'workers/action-relay.ts', command], {
          env,
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        children.push(child);
        return child;
      };
      const api = start('api');
      api.stdout?.resume();
      const worker = start('worker');
      const workerLines: string[] = [];
      worker.stdout?.on('data', (d: Buffer) => workerLines.push(...d.toString().split('\n').filter(Boolean)));

      const apiUrl = `http://127.0.0.1:${port}`;
      await waitFor(
        () =>
          fetch(`${apiUrl}/readyz`)
            .then((r) => r.ok)
            .catch(() => false),
        60_000,
        'the api',
      );
      const post = (path: string, body: unknown) =>
        fetch(`${apiUrl}${path}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', traceparent: `00-${CALLER_TRACE}-${CALLER_SPAN}-01` },
          body: JSON.stringify(body),
        }).then(async (r) => ({ status: r.status, body: (await r.json()) as Record<string, unknown> }));

      const one = await post('/v1/jobs', { actionId: 'traced', params: { n: 1, key: 'sekret-value' } });
      expect(one.status).toBe(202);
      const batch = await post('/v1/jobs/batch', { jobs: [{ actionId: 'traced', params: { n: 2 } }, { actionId: 'untraced' }] });
      expect(batch.status).toBe(202);
      const jobId = one.body.jobId as string;
      const [batchJob, quietJob] = (batch.body.results as { jobId: string }[]).map((r) => r.jobId);

      await waitFor(() => receiver.requests.length >= 4, 60_000, 'four requests (one retried)');
      // Every span reaches the receiver: two enqueue spans of the traced jobs plus three attempts with their HTTP spans, and the untraced job's.
      const spansOf = (id: string | undefined) => otlp.spans.filter((s) => s.attributes['action_relay.job.id'] === id);
      await waitFor(
        () => spansOf(jobId).length >= 3 && spansOf(batchJob).length >= 2 && spansOf(quietJob).length >= 2,
        30_000,
        'the spans',
      );

      // caller -> enqueue span (api) -> attempt span (worker) -> HTTP span -> traceparent at the receiver
      const enqueue = spansOf(jobId).find((s) => s.name === 'enqueue traced');
      expect(enqueue).toMatchObject({ traceId: CALLER_TRACE, parentSpanId: CALLER_SPAN, kind: 4, service: 'action-relay-api' });
      // BullMQ's own span of the Redis write (bullmq-otel) nests under it.
      await waitFor(
        () => otlp.spans.some((s) => s.parentSpanId === enqueue?.spanId && s.name === 'add deliveries.traced'),
        10_000,
        "BullMQ's add span",
      );
      const attempts = spansOf(jobId)
        .filter((s) => s.name === 'deliver traced')
        .sort((a, b) => Number(a.attributes['action_relay.attempt']) - Number(b.attributes['action_relay.attempt']));
      expect(attempts.map((a) => a.attributes)).toEqual([
        expect.objectContaining({ 'action_relay.attempt': 1, 'action_relay.outcome': 'retry', 'http.response.status_code': 503 }),
        expect.objectContaining({ 'action_relay.attempt': 2, 'action_relay.outcome': 'delivered', 'http.response.status_code': 200 }),
      ]);
      for (const a of attempts)
        expect(a).toMatchObject({ traceId: CALLER_TRACE, parentSpanId: enqueue?.spanId, service: 'action-relay-worker' });

      const hookRequests = receiver.requests.filter((r) => r.url.startsWith('/hook?key=sekret'));
      expect(hookRequests).toHaveLength(2);
      for (const [i, attempt] of attempts.entries()) {
        const http = otlp.spans.find((s) => s.parentSpanId === attempt.spanId && s.kind === 3);
        expect(http).toMatchObject({ name: 'POST', traceId: CALLER_TRACE });
        expect(http?.attributes).toMatchObject({
          'http.request.method': 'POST',
          'server.address': '127.0.0.1',
          'http.response.status_code': i === 0 ? 503 : 200,
        });
        // The URL of the span is the one of the dead-letter record: its secrets masked.
        expect(String(http?.attributes['url.full'])).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/hook\?key=/);
        expect(String(http?.attributes['url.full'])).not.toContain('sekret-value');
        expect(hookRequests[i]?.headers.traceparent).toBe(`00-${CALLER_TRACE}-${http?.spanId}-01`);
      }
      expect(JSON.stringify(otlp.spans)).not.toContain('sekret-value');

      // The batch's jobs continue the same caller trace; propagateTrace: false keeps the header off the request.
      expect(spansOf(batchJob).find((s) => s.name === 'enqueue traced')).toMatchObject({
        traceId: CALLER_TRACE,
        parentSpanId: CALLER_SPAN,
      });
      expect(spansOf(quietJob).find((s) => s.name === 'deliver untraced')).toMatchObject({ traceId: CALLER_TRACE });
      expect(receiver.requests.find((r) => r.url === '/quiet')?.headers.traceparent).toBeUndefined();

      // The worker's lines of an attempt carry its trace and span ids.
      const delivered = workerLines
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .find((l) => l.jobId === jobId && l.msg === 'delivered');
      expect(delivered).toMatchObject({ trace_id: CALLER_TRACE, span_id: attempts[1]?.spanId });
      expect(otlp.contentTypes.every((t) => t.startsWith('application/json'))).toBe(true);
    },
  );
});
