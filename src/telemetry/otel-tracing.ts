/*
 * The OpenTelemetry SDK behind `Tracing`. Imported only when an OTLP endpoint is set (tracing.ts),
 * so that a process without one loads none of it.
 */
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  context,
  defaultTextMapGetter,
  defaultTextMapSetter,
  propagation,
  trace,
  type Attributes,
  type Context,
  type Span,
  type Tracer,
} from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator, getNumberFromEnv } from '@opentelemetry/core';
import { defaultResource, detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  TracerProvider,
  type Sampler,
  type SpanExporter,
} from '@opentelemetry/sdk-trace';
import type { Span as BullSpan, Telemetry } from 'bullmq';
import { BullMQOtel } from 'bullmq-otel';
import type { AttemptSpan, EnqueueSpan, HttpSpan, StartTracingOptions, Tracing } from './tracing.js';
import type { SamplerName, TracingSettings } from './tracing-config.js';

/** The tracer name of the spans this project makes (instrumentation scope). */
export const TRACER_NAME = 'action-relay';

function sampler(name: SamplerName, ratio: number): Sampler {
  switch (name) {
    case 'always_on':
      return new AlwaysOnSampler();
    case 'always_off':
      return new AlwaysOffSampler();
    case 'traceidratio':
      return new TraceIdRatioBasedSampler(ratio);
    case 'parentbased_always_on':
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
    case 'parentbased_always_off':
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case 'parentbased_traceidratio':
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) });
  }
}

async function exporter(protocol: 'http/protobuf' | 'http/json'): Promise<SpanExporter> {
  // The exporters read OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _TIMEOUT and _COMPRESSION themselves.
  if (protocol === 'http/json') return new (await import('@opentelemetry/exporter-trace-otlp-http')).OTLPTraceExporter();
  return new (await import('@opentelemetry/exporter-trace-otlp-proto')).OTLPTraceExporter();
}

/** The OTEL_BSP_* variables (this SDK version leaves them to the caller). */
function batchOptions() {
  const opts: { scheduledDelayMillis?: number; maxQueueSize?: number; maxExportBatchSize?: number; exportTimeoutMillis?: number } = {};
  const delay = getNumberFromEnv('OTEL_BSP_SCHEDULE_DELAY');
  const queue = getNumberFromEnv('OTEL_BSP_MAX_QUEUE_SIZE');
  const batch = getNumberFromEnv('OTEL_BSP_MAX_EXPORT_BATCH_SIZE');
  const timeout = getNumberFromEnv('OTEL_BSP_EXPORT_TIMEOUT');
  if (delay !== undefined) opts.scheduledDelayMillis = delay;
  if (queue !== undefined) opts.maxQueueSize = queue;
  if (batch !== undefined) opts.maxExportBatchSize = batch;
  if (timeout !== undefined) opts.exportTimeoutMillis = timeout;
  return opts;
}

/** The host and port of a URL, as `server.address` / `server.port` want them. */
function serverOf(url: string): Attributes {
  try {
    const u = new URL(url);
    const port = u.port ? Number(u.port) : u.protocol === 'https:' ? 443 : 80;
    return { 'server.address': u.hostname.replace(/^\[|\]$/g, ''), 'server.port': port, 'url.scheme': u.protocol.slice(0, -1) };
  } catch {
    return {};
  }
}

/** What BullMQ gets instead of a span outside any trace. */
const NO_BULL_SPAN: BullSpan<Context> = {
  setSpanOnContext: (ctx) => ctx,
  setAttribute: () => undefined,
  setAttributes: () => undefined,
  addEvent: () => undefined,
  recordException: () => undefined,
  end: () => undefined,
};

/**
 * bullmq-otel, with BullMQ's spans kept to those inside a trace: its `add` span nests under the
 * enqueue span, while a queue's `close` or `pause` at shutdown does not start a trace of its own.
 */
function nestedBullTelemetry(version: string): Telemetry<Context> {
  const otel = new BullMQOtel(TRACER_NAME, version);
  return {
    contextManager: otel.contextManager,
    tracer: {
      startSpan: (name, options, ctx) =>
        trace.getSpan(ctx ?? context.active()) ? otel.tracer.startSpan(name, options, ctx) : NO_BULL_SPAN,
    },
  };
}

export async function createOtelTracing(
  settings: Extract<TracingSettings, { enabled: true }>,
  opts: StartTracingOptions,
): Promise<Tracing> {
  const resource = defaultResource()
    .merge(resourceFromAttributes({ 'service.name': opts.serviceName, 'service.version': opts.serviceVersion }))
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win.
    .merge(detectResources({ detectors: [envDetector] }));
  const provider = new TracerProvider({
    resource,
    sampler: sampler(settings.sampler, settings.ratio),
    spanProcessors: [new BatchSpanProcessor({ exporter: await exporter(settings.protocol), ...batchOptions() })],
  });
  const propagator = new W3CTraceContextPropagator();
  // bullmq-otel goes through the global API; a host that registered its own keeps it (these return false).
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(propagator);
  trace.setGlobalTracerProvider(provider);
  const tracer: Tracer = provider.getTracer(TRACER_NAME, opts.serviceVersion);

  const parentOf = (traceparent: string | undefined): Context =>
    traceparent === undefined ? ROOT_CONTEXT : propagator.extract(ROOT_CONTEXT, { traceparent }, defaultTextMapGetter);
  const traceparentOf = (span: Span): string | undefined => {
    const carrier: Record<string, string> = {};
    propagator.inject(trace.setSpan(ROOT_CONTEXT, span), carrier, defaultTextMapSetter);
    return carrier.traceparent;
  };

  return {
    enabled: true,
    queueTelemetry: nestedBullTelemetry(opts.serviceVersion),

    enqueueSpan(job): EnqueueSpan {
      const span = tracer.startSpan(
        `enqueue ${job.actionId}`,
        {
          kind: SpanKind.PRODUCER,
          attributes: {
            'messaging.operation.type': 'send',
            'messaging.message.id': job.jobId,
            'action_relay.action.id': job.actionId,
            'action_relay.job.id': job.jobId,
          },
        },
        parentOf(job.traceparent),
      );
      const ctx = trace.setSpan(ROOT_CONTEXT, span);
      return {
        traceparent: traceparentOf(span),
        run: (fn) => context.with(ctx, fn),
        end(error) {
          if (error !== undefined) {
            span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
          }
          span.end();
        },
      };
    },

    attemptSpan(job): AttemptSpan {
      const span = tracer.startSpan(
        `deliver ${job.actionId}`,
        {
          kind: SpanKind.CONSUMER,
          attributes: {
            'messaging.operation.type': 'process',
            'messaging.message.id': job.jobId,
            'action_relay.action.id': job.actionId,
            'action_relay.job.id': job.jobId,
            'action_relay.attempt': job.attempt,
          },
        },
        parentOf(job.traceparent),
      );
      const { traceId, spanId } = span.spanContext();
      const attemptCtx = trace.setSpan(ROOT_CONTEXT, span);
      return {
        logFields: { trace_id: traceId, span_id: spanId },
        startHttp(req): HttpSpan {
          const attributes: Attributes = { 'http.request.method': req.method, 'url.full': req.url, ...serverOf(req.url) };
          if (req.resend) attributes['http.request.resend_count'] = req.resend;
          const http = tracer.startSpan(req.method, { kind: SpanKind.CLIENT, attributes }, attemptCtx);
          return {
            traceparent: traceparentOf(http),
            end(result) {
              if (result.status !== undefined) http.setAttribute('http.response.status_code', result.status);
              const errorType =
                result.errorType ?? (result.status !== undefined && result.status >= 400 ? String(result.status) : undefined);
              if (errorType !== undefined) {
                http.setAttribute('error.type', errorType);
                http.setStatus({ code: SpanStatusCode.ERROR });
              }
              http.end();
            },
          };
        },
        end(end) {
          span.setAttribute('action_relay.outcome', end.outcome);
          if (end.reason) span.setAttribute('action_relay.reason', end.reason);
          if (end.status !== undefined && end.status !== null) span.setAttribute('http.response.status_code', end.status);
          if (end.outcome === 'dead') span.setStatus({ code: SpanStatusCode.ERROR, message: end.reason ?? 'dead' });
          span.end();
        },
      };
    },

    async shutdown() {
      await provider.shutdown();
    },
  };
}
