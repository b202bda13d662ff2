import { actionDefinitionSchema, type ActionDefinition } from './action-schema.js';
import { compileJson, compileString, hasLoneSurrogate, MISSING, stringify, type CompileContext, type RenderScope } from './template.js';
import { compileParamValidator, formatIssues, typeSchema, type ParamValidator } from './param-validator.js';
import { HEADER_NAME, isHeaderValue } from '../delivery/header-grammar.js';
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
  /** Whether a non-2xx body must be read and parsed for `errorResponse.fields`. */
  readonly capturesErrorResponse: boolean;
  /** Picks the declared errorResponse fields from a parsed non-2xx body; a missing or mistyped field is left out. */
  captureErrorResponse(body: unknown): Record<string, unknown>;
  /** The rate-limit / circuit key: rateLimit.key or host:port. */
  readonly limitKey: string;
}

/** Headers that the relay sets itself and a definition may not override. */
const RESERVED_HEADERS = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'idempotency-key', 'user-agent']);
/** Headers the HTTP client refuses to send (undici: the connection's own, a protocol switch, 100-continue). */
const UNSENDABLE_HEADERS = new Set(['keep-alive', 'upgrade', 'expect']);
/** What the HTTP client refuses in a request path: a space, a control character, anything past Latin-1. */
const UNSENDABLE_PATH = /[^\u0021-\u00ff]/;
/** Names that would reach an object's prototype if used as a plain key: refused as parameter and field names. */
const PROTOTYPE_KEYS = new Set(['__proto__', 'constructor', 'prototype']);
const BAD_HEADER_VALUE = 'only tab, visible ASCII and Latin-1 characters are allowed in a header value';

/**
 * Parameter and response field names that could reach a prototype. Read from the raw input: the
 * schema's records drop a "__proto__" key silently, and a silent drop is no answer to the author.
 */
function prototypeKeyProblems(input: unknown): FieldProblem[] {
  const problems: FieldProblem[] = [];
  const own = (v: unknown): [string, unknown][] => (v !== null && typeof v === 'object' && !Array.isArray(v) ? Object.entries(v) : []);
  const walk = (fields: unknown, path: string) => {
    for (const [name, spec] of own(fields)) {
      if (PROTOTYPE_KEYS.has(name)) problems.push({ path: `${path}.${name}`, message: 'a reserved name; choose another' });
      const nested = own(spec).find(([k]) => k === 'fields');
      if (nested) walk(nested[1], `${path}.${name}.fields`);
    }
  };
  const root = own(input);
  walk(root.find(([k]) => k === 'parameters')?.[1], 'parameters');
  for (const block of ['response', 'errorResponse']) {
    walk(own(root.find(([k]) => k === block)?.[1]).find(([k]) => k === 'fields')?.[1], `${block}.fields`);
  }
  return problems;
}

/** Header names and values an auth block adds, checked as endpoint headers are. */
function authHeaderProblems(def: ActionDefinition): FieldProblem[] {
  const problems: FieldProblem[] = [];
  const auth = def.auth;
  const checkName = (name: string, path: string) => {
    if (!HEADER_NAME.test(name)) problems.push({ path, message: 'not a valid header name' });
    else if (RESERVED_HEADERS.has(name.toLowerCase())) problems.push({ path, message: 'this header is set by action-relay' });
  };
  if (auth.type === 'apiKey' && auth.in === 'header') checkName(auth.name, 'auth.name');
  if (auth.type === 'customToken') {
    if (auth.inject.as === 'header' && auth.inject.name) checkName(auth.inject.name, 'auth.inject.name');
    for (const [name, value] of Object.entries(auth.request.headers ?? {})) {
      if (typeof value === 'string' && !isHeaderValue(value)) {
        problems.push({ path: `auth.request.headers.${name}`, message: BAD_HEADER_VALUE });
      }
    }
  }
  return problems;
}

/**
 * Parses and checks a definition: schema, then what the schema alone cannot see (templates that
 * reference undeclared parameters, a body on GET or DELETE, reserved headers).
 * Throws ValidationError naming every problem.
 */
export function parseActionDefinition(input: unknown): ActionDefinition {
  const parsed = actionDefinitionSchema.safeParse(input);
  const reserved = prototypeKeyProblems(input);
  if (!parsed.success) throw new ValidationError('invalid action definition', [...reserved, ...formatIssues(parsed.error, '', input)]);
  const problems: FieldProblem[] = [...reserved, ...authHeaderProblems(parsed.data)];
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
  const seen = new Set<string>();
  for (const [name, value] of Object.entries(endpoint.headers ?? {})) {
    const lower = name.toLowerCase();
    if (RESERVED_HEADERS.has(lower)) {
      problems.push({ path: `endpoint.headers.${name}`, message: 'this header is set by action-relay' });
    }
    if (UNSENDABLE_HEADERS.has(lower)) {
      problems.push({ path: `endpoint.headers.${name}`, message: 'a header of the connection itself, which action-relay does not send' });
    }
    if (seen.has(lower)) problems.push({ path: `endpoint.headers.${name}`, message: 'the same header twice (names ignore case)' });
    seen.add(lower);
    // The schema refuses control characters; what undici would still refuse is found here, not at send time.
    if (!isHeaderValue(value)) problems.push({ path: `endpoint.headers.${name}`, message: BAD_HEADER_VALUE });
  }
  if (endpoint.path !== undefined && !endpoint.path.startsWith('/') && endpoint.path !== '') {
    problems.push({ path: 'endpoint.path', message: 'must start with /' });
  }
  // Substituted values are percent-encoded when sent; the text around them is sent as written.
  if (endpoint.path !== undefined && UNSENDABLE_PATH.test(endpoint.path.replace(/\{\{[^}]*\}\}/g, ''))) {
    problems.push({
      path: 'endpoint.path',
      message: 'a space or another character not allowed in a URL path: percent-encode it (a space is %20)',
    });
  }
  const path = compileString(endpoint.path ?? '', 'endpoint.path', cx);
  // Each segment on its own (problems were reported above), to check what substitution makes of it.
  const quiet: CompileContext = { declaredParams: cx.declaredParams, problems: [] };
  const segments = (endpoint.path ?? '')
    .split('/')
    .map((seg) => compileString(seg, 'endpoint.path', quiet))
    .filter((t) => !t.isConstant);
  const query = Object.entries(endpoint.query ?? {}).map(([k, v]) => [k, compileString(v, `endpoint.query.${k}`, cx)] as const);
  const headers = Object.entries(endpoint.headers ?? {}).map(
    ([k, v]) => [k.toLowerCase(), k, compileString(v, `endpoint.headers.${k}`, cx)] as const,
  );
  const body = def.body === undefined ? undefined : compileJson(def.body, 'body', cx, def.allowNulls);
  return { path, segments, query, headers, body };
}

const LONE_SURROGATE = 'holds a lone UTF-16 surrogate, which cannot be sent in a URL';
const DOT_SEGMENT = 'would make a whole path segment "." or "..", which moves up the third party\'s path';

/** encodeURIComponent, which throws URIError on a lone surrogate: checked before (checkPathSegments). */
const encodePathValue = (s: string) => encodeURIComponent(s);

type SegmentTemplate = ReturnType<typeof compileString>;

/**
 * Refuses what substitution would make of a path segment: "." or ".." (a server or proxy that
 * normalizes the path would send the request elsewhere), or a value with a lone surrogate.
 */
function checkPathSegments(segments: readonly SegmentTemplate[], scope: RenderScope): void {
  for (const seg of segments) {
    const bad = seg.refs.find((ref) => hasLoneSurrogate(stringify(ref.get(scope))));
    if (bad) throw new InvalidParamsError([{ path: bad.ref, message: LONE_SURROGATE }]);
    const rendered = seg.render(scope);
    if (rendered === '.' || rendered === '..') {
      throw new InvalidParamsError(seg.refs.map((ref) => ({ path: ref.ref, message: DOT_SEGMENT })));
    }
  }
}

/** At enqueue: a parameter that alone makes a path segment may not be "." or "..". */
function withPathSegmentCheck(validate: ParamValidator, segments: readonly SegmentTemplate[]): ParamValidator {
  const whole = segments.flatMap((seg) => (seg.exact && seg.refs[0]?.ref.startsWith('params.') ? [seg.refs[0]] : []));
  if (whole.length === 0) return validate;
  return (params) => {
    const result = validate(params);
    if (!result.ok) return result;
    const scope = { params: result.value, context: {}, job: { id: '', attempt: 1, idempotencyKey: '' } };
    const problems = whole.flatMap((ref) => {
      const v = stringify(ref.get(scope));
      return v === '.' || v === '..' ? [{ path: ref.ref, message: DOT_SEGMENT }] : [];
    });
    return problems.length > 0 ? { ok: false, problems } : result;
  };
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
  // The URL's path as written when the action adds none (a trailing slash can matter to a server).
  const basePath = def.endpoint.path ? base.pathname.replace(/\/+$/, '') : base.pathname;
  const baseQuery = base.search.length > 1 ? base.search.slice(1) : '';
  const method = def.endpoint.method;
  const hasBody = r.body !== undefined;

  const response = compileCapture(def.response?.fields);
  const errorResponse = compileCapture(def.errorResponse?.fields);

  const port = base.port || (base.protocol === 'https:' ? '443' : '80');

  const emptyScope: RenderScope = { params: {}, context: {}, job: { id: '', attempt: 0, idempotencyKey: '' } };
  const constantHeaders = Object.fromEntries(
    r.headers.filter(([, , t]) => t.isConstant).map(([lower, , t]) => [lower, t.render(emptyScope)]),
  );
  const templatedHeaders = r.headers.filter(([, , t]) => !t.isConstant);

  const constantPath = r.path.isConstant ? basePath + r.path.render(emptyScope) : undefined;

  /** Headers and body of a request whose path (query included) is rendered. */
  const finishRequest = (scope: RenderScope, path: string): BuiltRequest => {
    // Constant headers were checked and rendered when the definition was compiled.
    const headers: Record<string, string> = { ...constantHeaders };
    for (const [lower, name, t] of templatedHeaders) {
      if (t.exact && (t.exact(scope) === undefined || t.exact(scope) === null)) continue;
      const value = t.render(scope);
      if (!isHeaderValue(value)) {
        // Name the value that brought the character in: that is what the caller can fix.
        const culprit = t.refs.find((ref) => !isHeaderValue(stringify(ref.get(scope))));
        throw new InvalidParamsError([
          {
            path: culprit?.ref ?? `endpoint.headers.${name}`,
            message: `would put CR, LF or another character not allowed in a header into ${name}`,
          },
        ]);
      }
      headers[lower] = value;
    }
    if (!isHeaderValue(scope.job.idempotencyKey)) {
      throw new InvalidParamsError([{ path: 'idempotencyKey', message: 'not allowed in the Idempotency-Key header' }]);
    }
    headers['user-agent'] = opts.userAgent;
    headers['idempotency-key'] = scope.job.idempotencyKey;
    let body: string | undefined;
    if (hasBody) {
      const rendered = r.body!(scope);
      body = rendered === MISSING ? 'null' : rendered;
      headers['content-type'] ??= 'application/json';
    }
    return { method, origin, path, headers, body };
  };

  return {
    id: def.id,
    version: opts.version,
    definition: def,
    validateParams: withPathSegmentCheck(compileParamValidator(def.parameters), r.segments),
    capturesResponse: response.size > 0,
    capturesErrorResponse: errorResponse.size > 0,
    limitKey: def.rateLimit?.key ?? `${base.hostname}:${port}`,
    buildRequest(scope) {
      checkPathSegments(r.segments, scope);
      let path = constantPath ?? basePath + r.path.render(scope, encodePathValue);
      if (path === '') path = '/';
      // Most actions have no query: no URLSearchParams per job for them.
      if (r.query.length === 0) {
        return finishRequest(scope, baseQuery ? `${path}?${baseQuery}` : path);
      }
      // The URL's own query is sent as written ("?uploads" stays so); the action's values follow it.
      const search = new URLSearchParams();
      for (const [name, t] of r.query) {
        // URLSearchParams would turn a lone surrogate into U+FFFD: a silently different value.
        const bad = t.refs.find((ref) => [ref.get(scope)].flat().some((v) => typeof v === 'string' && hasLoneSurrogate(v)));
        if (bad) throw new InvalidParamsError([{ path: bad.ref, message: LONE_SURROGATE }]);
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
      const added = search.toString();
      const qs = baseQuery && added ? `${baseQuery}&${added}` : baseQuery || added;
      return finishRequest(scope, qs ? `${path}?${qs}` : path);
    },

    captureResponse(body, status) {
      return response.capture(body, (name, message) => {
        throw new ResponseInvalidError(`response field "${name}": ${message}`, status);
      });
    },
    // The third party's error body is information for the journey, not a contract: a field of
    // another type is left out, like a missing one.
    captureErrorResponse: (body) => errorResponse.capture(body, () => undefined),
  };
}

type CapturedFields = NonNullable<ActionDefinition['response']>['fields'];

/**
 * Compiles `response.fields` or `errorResponse.fields` into one picker: each field is read at its
 * dotted path (own properties only) and checked against its type. A missing field is left out; a
 * mistyped one goes to `onMistyped`, which throws or lets it be left out.
 */
function compileCapture(spec: CapturedFields | undefined) {
  const fields = Object.entries(spec ?? {}).map(([name, f]) => ({ name, path: (f.path ?? name).split('.'), schema: typeSchema(f.type) }));
  return {
    size: fields.length,
    capture(body: unknown, onMistyped: (name: string, message: string) => void): Record<string, unknown> {
      const out: Record<string, unknown> = {};
      for (const f of fields) {
        let v: unknown = body;
        for (const seg of f.path) {
          v = v !== null && typeof v === 'object' && Object.hasOwn(v, seg) ? (v as Record<string, unknown>)[seg] : undefined;
        }
        // A field the answer leaves out or sets to null is not captured (the journey sees it missing).
        if (v === undefined || v === null) continue;
        const parsed = f.schema.safeParse(v);
        if (parsed.success) out[f.name] = parsed.data;
        else onMistyped(f.name, parsed.error.issues[0]?.message ?? 'wrong type');
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
