import { afterEach, describe, expect, it } from 'vitest';
import { compileAction, parseActionDefinition } from '../../src/actions/compile-action.js';
import { InvalidParamsError, ValidationError, type FieldProblem } from '../../src/errors/errors.js';
import { jobInputSchema } from '../../src/queue/job-schema.js';

const job = { id: 'job-1', attempt: 1, idempotencyKey: 'idem-1' };

function problemsOf(fn: () => unknown): FieldProblem[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ValidationError || err instanceof InvalidParamsError) return err.problems;
    throw err;
  }
  throw new Error('expected a ValidationError or InvalidParamsError');
}

const base = (extra: Record<string, unknown> = {}) => ({
  id: 'h',
  name: 'h',
  endpoint: { url: 'https://api.example.test/v1', method: 'POST', ...((extra.endpoint as object) ?? {}) },
  ...Object.fromEntries(Object.entries(extra).filter(([k]) => k !== 'endpoint')),
});
const compile = (extra: Record<string, unknown>) => compileAction(parseActionDefinition(base(extra)), { version: 1, userAgent: 'ua' });

afterEach(() => {
  // Nothing here may reach a prototype; a leak would show on every object.
  expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  expect(Object.prototype).not.toHaveProperty('polluted');
});

describe('header names and values in a definition', () => {
  it.each(['X Bad', 'X:y', 'Ä-Header', 'X-Evil\r\n', '', '(x)'])('refuses the header name %j, naming the field', (name) => {
    const problems = problemsOf(() => parseActionDefinition(base({ endpoint: { headers: { [name]: 'v' } } })));
    expect(problems.map((p) => p.path)).toContain(`endpoint.headers.${name}`);
  });

  it.each([
    ['CR LF', 'a\r\nX-Evil: 1'],
    ['LF', 'a\nb'],
    ['NUL', 'a\u0000b'],
    ['DEL', 'a\u007fb'],
    ['a character beyond Latin-1', 'check ✓'],
    ['an emoji', 'hi 👋'],
  ])('refuses a header value with %s, naming the field', (_what, value) => {
    const problems = problemsOf(() => parseActionDefinition(base({ endpoint: { headers: { 'X-Note': value } } })));
    expect(problems).toEqual([{ path: 'endpoint.headers.X-Note', message: expect.any(String) }]);
  });

  it('accepts tab, visible ASCII and Latin-1 in a header value', () => {
    const req = compile({ endpoint: { headers: { 'X-Note': 'café\tau lait ~!' } } }).buildRequest({ params: {}, context: {}, job });
    expect(req.headers['x-note']).toBe('café\tau lait ~!');
  });

  it('refuses the same header twice, names ignoring case', () => {
    const problems = problemsOf(() => parseActionDefinition(base({ endpoint: { headers: { 'X-A': '1', 'x-a': '2' } } })));
    expect(problems).toEqual([{ path: 'endpoint.headers.x-a', message: expect.stringContaining('the same header twice') }]);
  });

  it('checks the header an apiKey or a customToken injects', () => {
    const apiKey = (name: string, where = 'header') => base({ auth: { type: 'apiKey', name, in: where, value: { env: 'K' } } });
    expect(problemsOf(() => parseActionDefinition(apiKey('X Key')))).toEqual([{ path: 'auth.name', message: 'not a valid header name' }]);
    expect(problemsOf(() => parseActionDefinition(apiKey('Host')))).toEqual([
      { path: 'auth.name', message: 'this header is set by action-relay' },
    ]);
    expect(() => parseActionDefinition(apiKey('api key', 'query'))).not.toThrow();
    const custom = (inject: Record<string, unknown>, headers?: Record<string, string>) =>
      base({
        auth: {
          type: 'customToken',
          request: { url: 'https://auth.example.test/token', method: 'POST', ...(headers ? { headers } : {}) },
          tokenPath: 'access_token',
          inject,
        },
      });
    expect(problemsOf(() => parseActionDefinition(custom({ as: 'header', name: 'Idempotency-Key' })))).toEqual([
      { path: 'auth.inject.name', message: 'this header is set by action-relay' },
    ]);
    expect(problemsOf(() => parseActionDefinition(custom({ as: 'bearer' }, { 'X-Client': 'ünï ✓' })))).toEqual([
      { path: 'auth.request.headers.X-Client', message: expect.stringContaining('Latin-1') },
    ]);
  });
});

describe('substituted values at run time', () => {
  const action = compile({
    endpoint: {
      path: '/u/{{params.note}}',
      query: { q: '{{params.note}}' },
      headers: { 'X-Note': 'note={{params.note}}', 'X-Profile': '{{context.profileId}}' },
    },
    parameters: { note: { type: 'string' } },
    body: { note: '{{params.note}}' },
  });

  it.each([
    ['CR LF', 'x\r\nX-Evil: 1'],
    ['a lone LF', 'x\ny'],
    ['NUL', 'x\u0000'],
    ['a character beyond Latin-1', '→'],
  ])('refuses a param with %s headed for a header, naming the param and the header', (_what, note) => {
    expect(problemsOf(() => action.buildRequest({ params: { note }, context: {}, job }))).toEqual([
      { path: 'params.note', message: expect.stringContaining('X-Note') },
    ]);
  });

  it('names a context field the same way', () => {
    expect(problemsOf(() => action.buildRequest({ params: {}, context: { profileId: 'p\r\n1' }, job }))).toEqual([
      { path: 'context.profileId', message: expect.stringContaining('X-Profile') },
    ]);
  });

  it('refuses an idempotency key that cannot be a header value', () => {
    expect(problemsOf(() => action.buildRequest({ params: {}, context: {}, job: { ...job, idempotencyKey: 'k\r\nX-Evil: 1' } }))).toEqual([
      { path: 'idempotencyKey', message: expect.any(String) },
    ]);
    expect(jobInputSchema.safeParse({ actionId: 'a', idempotencyKey: 'k\r\nX: 1' }).success).toBe(false);
    expect(jobInputSchema.safeParse({ actionId: 'a', idempotencyKey: 'é' }).success).toBe(false);
    expect(jobInputSchema.safeParse({ actionId: 'a', idempotencyKey: ' padded ' }).success).toBe(false);
    expect(jobInputSchema.safeParse({ actionId: 'a', idempotencyKey: 'order 42/step-7' }).success).toBe(true);
  });

  it('CR/LF in a path, query or body is encoded, not refused', () => {
    const req = compile({
      endpoint: { path: '/u/{{params.note}}', query: { q: '{{params.note}}' } },
      parameters: { note: { type: 'string' } },
      body: { note: '{{params.note}}' },
    }).buildRequest({ params: { note: 'a\r\nb' }, context: {}, job });
    expect(req.path).toBe('/v1/u/a%0D%0Ab?q=a%0D%0Ab');
    expect(req.body).toBe('{"note":"a\\r\\nb"}');
  });
});

describe('prototype keys', () => {
  it.each(['__proto__', 'constructor', 'prototype'])('refuses %s as a parameter, nested field or response field name', (name) => {
    const params = JSON.parse(
      `{"${name}": {"type": "string"}, "items": {"type": "listObject", "fields": {"${name}": {"type": "string"}}}}`,
    );
    const fields = JSON.parse(`{"${name}": {"type": "string"}}`);
    const problems = problemsOf(() => parseActionDefinition(base({ parameters: params, response: { fields } })));
    expect(problems.map((p) => p.path)).toEqual(
      expect.arrayContaining([`parameters.${name}`, `parameters.items.fields.${name}`, `response.fields.${name}`]),
    );
  });

  it('a __proto__ key in params is an undeclared parameter, not a prototype', () => {
    const action = compile({ parameters: { note: { type: 'string' } }, body: { note: '{{params.note}}' } });
    const r = action.validateParams(JSON.parse('{"note": "n", "__proto__": {"polluted": 1}}'));
    expect(r.ok ? [] : r.problems).toEqual([{ path: 'params.__proto__', message: 'not a declared parameter' }]);
  });

  it('__proto__ and constructor.prototype in context and body are plain data on the wire', () => {
    const body = JSON.parse('{"__proto__": {"polluted": 1}, "constructor": {"prototype": {"polluted": 1}}, "p": "{{context.__proto__}}"}');
    const action = compile({ body, endpoint: { headers: { 'X-C': '{{context.constructor}}' } } });
    const context = JSON.parse('{"__proto__": {"polluted": 1}, "constructor": {"prototype": {"polluted": 1}}}');
    const req = action.buildRequest({ params: {}, context, job });
    const sent = JSON.parse(req.body ?? '') as Record<string, unknown>;
    expect(Object.keys(sent)).toEqual(['__proto__', 'constructor', 'p']);
    expect(sent.p).toEqual({ polluted: 1 });
    expect(req.headers['x-c']).toBe('{"prototype":{"polluted":1}}');
  });

  it('a captured response with __proto__ keys fills only its own fields', () => {
    const action = compile({
      response: { fields: { id: { type: 'string' }, deep: { type: 'string', path: 'constructor.prototype.polluted' } } },
    });
    const out = action.captureResponse(
      JSON.parse('{"id": "r1", "__proto__": {"polluted": "yes"}, "constructor": {"prototype": {"polluted": "x"}}}'),
      200,
    );
    expect(out).toEqual({ id: 'r1', deep: 'x' });
    expect(Object.getPrototypeOf(out)).toBe(Object.prototype);
    // Without its own constructor key, the path does not walk into Object's real constructor.
    expect(action.captureResponse({ id: 'r2' }, 200)).toEqual({ id: 'r2' });
  });
});
