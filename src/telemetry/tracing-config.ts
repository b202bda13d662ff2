import { ConfigError } from '../config/config.js';

export type OtlpProtocol = 'http/protobuf' | 'http/json';

export type SamplerName =
  'always_on' | 'always_off' | 'traceidratio' | 'parentbased_always_on' | 'parentbased_always_off' | 'parentbased_traceidratio';

const SAMPLERS: readonly SamplerName[] = [
  'always_on',
  'always_off',
  'traceidratio',
  'parentbased_always_on',
  'parentbased_always_off',
  'parentbased_traceidratio',
];

export type TracingSettings =
  | { enabled: false }
  | {
      enabled: true;
      /** OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL. @defaultValue 'http/protobuf' */
      protocol: OtlpProtocol;
      /** OTEL_TRACES_SAMPLER. @defaultValue 'parentbased_always_on' */
      sampler: SamplerName;
      /** OTEL_TRACES_SAMPLER_ARG, for the ratio samplers. @defaultValue 1 */
      ratio: number;
    };

const set = (v: string | undefined): v is string => v !== undefined && v.trim() !== '';

/**
 * Reads the standard OpenTelemetry variables that decide whether and how this process traces.
 * Tracing is on when an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), unless OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none.
 * The exporter reads its own variables (endpoint, headers, timeout, compression). A bad value
 * stops the process with a message naming the variable.
 */
export function readTracingSettings(env: NodeJS.ProcessEnv = process.env): TracingSettings {
  const fail = (name: string, message: string): never => {
    throw new ConfigError(`invalid environment: ${name}: ${message}`);
  };
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return { enabled: false };
  const exporter = env.OTEL_TRACES_EXPORTER?.trim();
  if (set(exporter) && exporter !== 'otlp' && exporter !== 'none') fail('OTEL_TRACES_EXPORTER', `"${exporter}": otlp or none`);
  if (exporter === 'none') return { enabled: false };
  const endpointVar = set(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) ? 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT' : 'OTEL_EXPORTER_OTLP_ENDPOINT';
  const endpoint = env[endpointVar];
  if (!set(endpoint)) return { enabled: false };
  if (!URL.canParse(endpoint) || !/^https?:$/.test(new URL(endpoint).protocol)) fail(endpointVar, `"${endpoint}" is not an http(s) URL`);

  const protocolVar = set(env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL) ? 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL' : 'OTEL_EXPORTER_OTLP_PROTOCOL';
  const protocol = env[protocolVar]?.trim() || 'http/protobuf';
  if (protocol !== 'http/protobuf' && protocol !== 'http/json') {
    fail(protocolVar, `"${protocol}": http/protobuf or http/json (grpc is not supported)`);
  }

  const sampler = (env.OTEL_TRACES_SAMPLER?.trim() || 'parentbased_always_on') as SamplerName;
  if (!SAMPLERS.includes(sampler)) fail('OTEL_TRACES_SAMPLER', `"${sampler}": one of ${SAMPLERS.join(', ')}`);
  let ratio = 1;
  if (set(env.OTEL_TRACES_SAMPLER_ARG) && sampler.endsWith('traceidratio')) {
    ratio = Number(env.OTEL_TRACES_SAMPLER_ARG);
    if (!Number.isFinite(ratio) || ratio < 0 || ratio > 1)
      fail('OTEL_TRACES_SAMPLER_ARG', `"${env.OTEL_TRACES_SAMPLER_ARG}": a number from 0 to 1`);
  }
  return { enabled: true, protocol: protocol as OtlpProtocol, sampler, ratio };
}
