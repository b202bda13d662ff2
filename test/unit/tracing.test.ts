import { describe, expect, it } from 'vitest';
import { DelayedError } from 'bullmq';
import { attemptEnd, spanUrl } from '../../src/delivery/attempt-tracing.js';
import { formatTraceparent, parseTraceparent, withTraceparent, withTraceparentHeader } from '../../src/telemetry/trace-context.js';
import { readTracingSettings } from '../../src/telemetry/tracing-config.js';
import { noTracing } from '../../src/telemetry/tracing.js';
import { jobInputSchema } from '../../src/queue/job-schema.js';

const TP = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

describe('traceparent values', () => {
  it('reads a valid one and writes it back the same', () => {
    const p = parseTraceparent(TP);
    expect(p).toEqual({ traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', flags: 1 });
    expect(formatTraceparent(p as NonNullable<typeof p>)).toBe(TP);
  });

  it.each([
    ['upper case', TP.toUpperCase()],
    ['all-zero trace id', `00-${'0'.repeat(32)}-00f067aa0ba902b7-01`],
    ['all-zero span id', `00-4bf92f3577b34da6a3ce929d0e0e4736-${'0'.repeat(16)}-01`],
    ['short trace id', '00-4bf92f3577b34da6-00f067aa0ba902b7-01'],
    ['another version', TP.replace(/^00/, 'ff')],
    ['trailing text', `${TP}-x`],
  ])('refuses %s', (_what, value) => {
    expect(parseTraceparent(value)).toBeNull();
  });

  it('job input: a bad traceparent is a field error naming it', () => {
    const r = jobInputSchema.safeParse({ actionId: 'a', traceparent: 'nope' });
    expect(r.success).toBe(false);
    expect(r.error?.issues[0]?.path).toEqual(['traceparent']);
    expect(jobInputSchema.parse({ actionId: 'a', traceparent: TP }).traceparent).toBe(TP);
  });

  it('the header fills a job without one, never replaces a job field, and a malformed header is ignored', () => {
    expect(withTraceparentHeader({ actionId: 'a' }, TP)).toEqual({ actionId: 'a', traceparent: TP });
    const own = { actionId: 'a', traceparent: TP.replace('01', '00') };
    expect(withTraceparentHeader(own, TP)).toBe(own);
    expect(withTraceparentHeader({ actionId: 'a' }, 'garbage')).toEqual({ actionId: 'a' });
    expect(withTraceparentHeader({ actionId: 'a' }, [TP, TP])).toEqual({ actionId: 'a' });
    expect(withTraceparentHeader(null, TP)).toBeNull();
  });
});

describe('tracing settings from the OTel variables', () => {
  const endpoint = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' };

  it('is off without an endpoint, or when disabled', () => {
    expect(readTracingSettings({})).toEqual({ enabled: false });
    expect(readTracingSettings({ ...endpoint, OTEL_SDK_DISABLED: 'true' })).toEqual({ enabled: false });
    expect(readTracingSettings({ ...endpoint, OTEL_TRACES_EXPORTER: 'none' })).toEqual({ enabled: false });
  });

  it('defaults to http/protobuf and parentbased_always_on; the traces-specific variables win', () => {
    expect(readTracingSettings(endpoint)).toEqual({ enabled: true, protocol: 'http/protobuf', sampler: 'parentbased_always_on', ratio: 1 });
    expect(
      readTracingSettings({
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://127.0.0.1:4318/v1/traces',
        OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json',
        OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
        OTEL_TRACES_SAMPLER_ARG: '0.25',
      }),
    ).toEqual({ enabled: true, protocol: 'http/json', sampler: 'parentbased_traceidratio', ratio: 0.25 });
  });

  it.each([
    [{ ...endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }, /OTEL_EXPORTER_OTLP_PROTOCOL: "grpc"/],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'not a url' }, /OTEL_EXPORTER_OTLP_ENDPOINT: "not a url"/],
    [{ ...endpoint, OTEL_TRACES_SAMPLER: 'sometimes' }, /OTEL_TRACES_SAMPLER: "sometimes"/],
    [{ ...endpoint, OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '2' }, /OTEL_TRACES_SAMPLER_ARG: "2"/],
    [{ ...endpoint, OTEL_TRACES_EXPORTER: 'zipkin' }, /OTEL_TRACES_EXPORTER: "zipkin"/],
  ])('a bad value names its variable: %o', (env, message) => {
    expect(() => readTracingSettings(env)).toThrow(message);
  });
});

describe('noTracing', () => {
  it('stores and forwards the caller traceparent as it is, and logs its trace id', () => {
    expect(noTracing.enqueueSpan({ actionId: 'a', jobId: 'j', traceparent: TP }).traceparent).toBe(TP);
    expect(noTracing.enqueueSpan({ actionId: 'a', jobId: 'j' }).traceparent).toBeUndefined();
    const attempt = noTracing.attemptSpan({ actionId: 'a', jobId: 'j', attempt: 1, traceparent: TP });
    expect(attempt.logFields).toEqual({ trace_id: '4bf92f3577b34da6a3ce929d0e0e4736' });
    expect(attempt.startHttp({ method: 'POST', url: 'http://x/' }).traceparent).toBe(TP);
    expect(
      noTracing.attemptSpan({ actionId: 'a', jobId: 'j', attempt: 1 }).startHttp({ method: 'GET', url: 'http://x/' }).traceparent,
    ).toBeUndefined();
  });
});

describe('withTraceparent', () => {
  it('sets the header once, whatever the case of one already there, and leaves the input alone', () => {
    const headers = { 'content-type': 'application/json', TraceParent: 'old' };
    expect(withTraceparent(headers, TP)).toEqual({ 'content-type': 'application/json', traceparent: TP });
    expect(headers).toEqual({ 'content-type': 'application/json', TraceParent: 'old' });
    expect(withTraceparent(headers, undefined)).toBe(headers);
  });
});

describe('attempt spans', () => {
  it('show a URL with secrets masked and query values replaced', () => {
    const redact = (s: string) => s.replaceAll('tok-123', '***');
    expect(spanUrl({ origin: 'https://api.example:8443', path: '/v1/tok-123/send?key=abc&n=&x=1' }, redact)).toBe(
      'https://api.example:8443/v1/***/send?key=REDACTED&n=REDACTED&x=REDACTED',
    );
    expect(spanUrl({ origin: 'http://h', path: '/p' }, redact)).toBe('http://h/p');
  });

  it('end as the processor ended: outcome, deferral, or a retry with its reason and status', () => {
    expect(attemptEnd({ value: { outcome: 'dead', status: 404, reason: 'http_status', attempts: 1 } })).toEqual({
      outcome: 'dead',
      status: 404,
      reason: 'http_status',
    });
    expect(attemptEnd({ thrown: new DelayedError() })).toEqual({ outcome: 'deferred' });
    const retry = Object.assign(new Error('503'), { error: { reason: 'http_status', status: 503 } });
    expect(attemptEnd({ thrown: retry })).toEqual({ outcome: 'retry', reason: 'http_status', status: 503 });
    expect(attemptEnd({ thrown: new Error('x') })).toEqual({ outcome: 'retry', reason: null, status: null });
  });
});
