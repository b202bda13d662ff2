import { actionDefinitionSchema, type ActionDefinition } from './action-schema.js';
import { compileJson, compileString, MISSING, stringify, type CompileContext, type RenderScope } from './template.js';
import { compileParamValidator, formatIssues, typeSchema, type ParamValidator } from './param-validator.js';
import { InvalidParamsError, ResponseInvalidError, ValidationError, type FieldProblem } from '../errors/errors.js';

/** One HTTP request, ready to send (auth not yet applied). */
export interface BuiltRequest {
  method: string;
  /** scheme://host:port */
  origin: string;
  /** path and query string */
  path: string;
  headers: Record<string, string>;
  body: string | undefined;
}

/** An action definition compiled once per version into a ready-to-run object. */
export interface CompiledAction {
  readonly id: string;
  readonly version: number;
  readonly definition: ActionDefinition;
  readonly validateParams: ParamValidator;
  /** Renders the request of one attempt; throws InvalidParamsError when a value cannot be sent. */
  buildRequest(scope: RenderScope): BuiltRequest;
  /** Whether the response body must be read and parsed. */
  readonly capturesResponse: boolean;
  /** Picks and type-checks the declared response fields from a parsed 2xx body. */
  captureResponse(body: unknown, status: number): Record<string, unknown>;
  /** The rate-limit / circuit key: rateLimit.key or host:port. */
  readonly limitKey: string;
}

const HEADER_VALUE_OK = /^[^\u0000-\u0008\u000a-\u001f\u007f]*$/;
/** Headers that the relay sets itself and a definition may not override. */
const RESERVED_HEADERS = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'idempotency-key', 'user-agent']);

/**
 * Parses and checks a definition: schema, then what the schema alone cannot see (templates that
 * reference undeclared parameters, a body on GET or DELETE, reserved headers).
 * Throws ValidationError naming every problem.
 */
export function parseActionDefinition(input: unknown): ActionDefinition {
  const parsed = actionDefinitionSchema.safeParse(input);
  if (!parsed.success) throw new ValidationError('invalid action definition', formatIssues(parsed.error, '', input));
  const problems: FieldProblem[] = [];
  buildRenderers(parsed.data, problems);
  if (problems.length > 0) throw new ValidationError('invalid action definition', problems);
  return parsed.data;
}

function buildRenderers(def: ActionDefinition, problems: FieldProblem[]) {
  const cx: CompileContext = { declaredParams: new Set(Object.keys(def.parameters)), problems };
  const { endpoint } = def;
  if (def.body !== undefined && (endpoint.method === 'GET' || endpoint.method === 'DELETE')) {
    problems.push({ path: 'body', message: `a body is not allowed with ${endpoint.method}` });
  }
  for (const name of Object.keys(endpoint.headers ?? {})) {
    if (RESERVED_HEADERS.has(name.toLowerCase())) {
      problems.push({ path: `endpoint.headers.${name}`, message: 'this header is set by action-relay' });
    }
  }
  if (endpoint.path !== undefined && !endpoint.path.startsWith('/') && endpoint.path !== '') {
    problems.push({ path: 'endpoint.path', message: 'must start with /' });
  }
  const path = compileString(endpoint.path ?? '', 'endpoint.path', cx);
  const query = Object.entries(endpoint.query ?? {}).map(([k, v]) => [k, compileString(v, `endpoint.query.${k}`, cx)] as const);
  const headers = Object.entries(endpoint.headers ?? {}).map(
    ([k, v]) => [k.toLowerCase(), k, compileString(v, `endpoint.headers.${k}`, cx)] as const,
  );
  const body = def.body === undefined ? undefined : compileJson(def.body, 'body', cx, def.allowNulls);
  return { path, query, headers, body };
}

export interface CompileOptions {
  version: number;
  /** Sent as User-Agent. */
  userAgent: string;
}

/** Compiles a parsed definition; call once per stored version. */
export function compileAction(def: ActionDefinition, opts: CompileOptions): CompiledAction {
  const problems: FieldProblem[] = [];
  const r = buildRenderers(def, problems);
  if (problems.length > 0) throw new ValidationError('invalid action definition', problems);

  const base = new URL(def.endpoint.url);
  const origin = base.origin;
  const basePath = base.pathname.replace(/\/+$/, '');
  const baseQuery = base.search.length > 1 ? base.search.slice(1) : '';
  const method = def.endpoint.method;
  const hasBody = r.body !== undefined;

  const fields = Object.entries(def.response?.fields ?? {}).map(([name, spec]) => ({
    name,
    path: (spec.path ?? name).split('.'),
    schema: typeSchema(spec.type),
  }));

  const port = base.port || (base.protocol === 'https:' ? '443' : '80');

  return {
    id: def.id,
    version: opts.version,
    definition: def,
    validateParams: compileParamValidator(def.parameters),
    capturesResponse: fields.length > 0,
    limitKey: def.rateLimit?.key ?? `${base.hostname}:${port}`,
    buildRequest(scope) {
      let path = basePath + r.path.render(scope, encodeURIComponent);
      if (path === '') path = '/';
      const search = new URLSearchParams(baseQuery);
      for (const [name, t] of r.query) {
        if (t.exact) {
          const v = t.exact(scope);
          if (v === undefined || v === null) continue;
          if (Array.isArray(v)) {
            for (const item of v) search.append(name, stringify(item));
            continue;
          }
          search.append(name, stringify(v));
        } else search.append(name, t.render(scope));
      }
      const qs = search.toString();
      const headers: Record<string, string> = {};
      for (const [lower, name, t] of r.headers) {
        if (t.exact && (t.exact(scope) === undefined || t.exact(scope) === null)) continue;
        const value = t.render(scope);
        if (!HEADER_VALUE_OK.test(value)) {
          throw new InvalidParamsError([
            { path: `endpoint.headers.${name}`, message: 'a substituted value contains CR, LF or another control character' },
          ]);
        }
        headers[lower] = value;
      }
      headers['user-agent'] = opts.userAgent;
      headers['idempotency-key'] = scope.job.idempotencyKey;
      let body: string | undefined;
      if (hasBody) {
        const rendered = r.body!(scope);
        body = JSON.stringify(rendered === MISSING ? null : rendered);
        headers['content-type'] ??= 'application/json';
      }
      return { method, origin, path: qs ? `${path}?${qs}` : path, headers, body };
    },
    captureResponse(body, status) {
      const out: Record<string, unknown> = {};
      for (const f of fields) {
        let v: unknown = body;
        for (const seg of f.path) {
          v = v !== null && typeof v === 'object' && Object.hasOwn(v, seg) ? (v as Record<string, unknown>)[seg] : undefined;
        }
        if (v === undefined) continue;
        const parsed = f.schema.safeParse(v);
        if (!parsed.success) {
          throw new ResponseInvalidError(`response field "${f.name}": ${parsed.error.issues[0]?.message ?? 'wrong type'}`, status);
        }
        out[f.name] = parsed.data;
      }
      return out;
    },
  };
}

/** Validates params against a compiled action, throwing the job-level error. */
export function checkParams(action: CompiledAction, params: unknown): Record<string, unknown> {
  const result = action.validateParams(params);
  if (!result.ok) throw new InvalidParamsError(result.problems);
  return result.value;
}
