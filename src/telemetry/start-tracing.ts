import { noTracing, type StartTracingOptions, type Tracing } from './tracing.js';
import { readTracingSettings } from './tracing-config.js';

/** Tracing as the OTel variables say: the SDK when an OTLP endpoint is set, else `noTracing`. */
export async function startTracing(opts: StartTracingOptions): Promise<Tracing> {
  const settings = opts.settings ?? readTracingSettings(opts.env);
  if (!settings.enabled) return noTracing;
  const { createOtelTracing } = await import('./otel-tracing.js');
  return createOtelTracing(settings, opts);
}
