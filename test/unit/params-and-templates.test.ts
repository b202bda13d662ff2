import { describe, expect, it } from 'vitest';
import { compileAction, parseActionDefinition } from '../../src/actions/compile-action.js';
import { compileParamValidator } from '../../src/actions/param-validator.js';
import { InvalidParamsError, ValidationError } from '../../src/errors/errors.js';

const job = { id: 'job-1', attempt: 2, idempotencyKey: 'idem-1' };

function problemsOf(fn: () => unknown): { path: string; message: string }[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ValidationError) return err.problems;
    throw err;
  }
  throw new Error('expected a ValidationError');
}

describe('parameter types', () => {
  const cases: [string, unknown, unknown][] = [
    ['string', 'hi', 3],
    ['integer', 42, 4.5],
    ['decimal', 4.5, '4.5'],
    ['boolean', true, 'true'],
    ['date', '2026-02-28', '2026-02-30'],
    ['dateTime', '2026-11-28T10:00:00+01:00', '2026-11-28T10:00:00'],
    ['dateTime', 1764320400000, -5],
    ['listString', ['a', 'b'], ['a', 1]],
    ['listInteger', [1, 2], [1, 2.5]],
    ['listDecimal', [1.5, 2], ['1.5']],
    ['listBoolean', [true, false], [1]],
    ['listDateTime', ['2026-11-28T10:00:00Z', 1764320400000], ['yesterday']],
  ];
  it.each(cases)('%s accepts %j and rejects %j naming the field', (type, good, bad) => {
    const validate = compileParamValidator({ v: { type: type as never } });
    expect(validate({ v: good })).toEqual({ ok: true, value: { v: good } });
    const r = validate({ v: bad });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.problems.map((p) => p.path)).toEqual([typeof bad === 'object' ? expect.stringMatching(/^params\.v/) : 'params.v']);
  });

  it('listObject checks its fields, requires what is required and refuses undeclared params', () => {
    const validate = compileParamValidator({
      items: { type: 'listObject', fields: { sku: { type: 'string', required: true }, qty: { type: 'integer' } } },
      phone: { type: 'string', required: true },
    });
    expect(validate({ phone: '+1', items: [{ sku: 'A', qty: 2 }] }).ok).toBe(true);
    const r = validate({ items: [{ qty: 'x' }], extra: 1 });
    expect(r.ok ? [] : r.problems).toEqual(
      expect.arrayContaining([
        { path: 'params.items[0].sku', message: 'required' },
        { path: 'params.items[0].qty', message: 'expected an integer' },
        { path: 'params.phone', message: 'required' },
        { path: 'params.extra', message: 'not a declared parameter' },
      ]),
    );
  });
});

describe('templates', () => {
  const def = (extra: Record<string, unknown>) =>
    parseActionDefinition({
      id: 'tpl',
      name: 'tpl',
      endpoint: {
        url: 'https://api.example.test/v1/',
        path: '/users/{{params.user}}/x',
        method: 'POST',
        query: { q: '{{params.note}}', fixed: 'yes' },
        headers: { 'X-Note': '{{params.note}}' },
      },
      parameters: {
        user: { type: 'string', required: true },
        n: { type: 'decimal' },
        items: { type: 'listObject', fields: { a: { type: 'integer' } } },
        note: { type: 'string' },
      },
      body: {
        n: '{{params.n}}',
        items: '{{params.items}}',
        text: 'n={{params.n}} job {{job.id}}#{{job.attempt}}',
        note: '{{params.note}}',
        list: ['{{params.note}}', 1],
        key: '{{job.idempotencyKey}}',
      },
      ...extra,
    });

  it('keeps types for exact placeholders, stringifies embedded ones and URL-encodes path values', () => {
    const req = compileAction(def({}), { version: 1, userAgent: 'action-relay/test' }).buildRequest({
      params: { user: 'a b/c', n: 2.5, items: [{ a: 1 }], note: 'hi' },
      context: {},
      job,
    });
    expect(req.origin).toBe('https://api.example.test');
    expect(req.path).toBe('/v1/users/a%20b%2Fc/x?q=hi&fixed=yes');
    expect(JSON.parse(req.body ?? '')).toEqual({
      n: 2.5,
      items: [{ a: 1 }],
      text: 'n=2.5 job job-1#2',
      note: 'hi',
      list: ['hi', 1],
      key: 'idem-1',
    });
    expect(req.headers).toMatchObject({
      'x-note': 'hi',
      'idempotency-key': 'idem-1',
      'user-agent': 'action-relay/test',
      'content-type': 'application/json',
    });
  });

  it('drops a missing optional value, or sends null with allowNulls', () => {
    const scope = { params: { user: 'u' }, context: {}, job };
    const dropped = compileAction(def({}), { version: 1, userAgent: 'ua' }).buildRequest(scope);
    expect(JSON.parse(dropped.body ?? '')).toEqual({ text: 'n= job job-1#2', list: [1], key: 'idem-1' });
    expect(dropped.path).toBe('/v1/users/u/x?fixed=yes');
    expect(dropped.headers['x-note']).toBeUndefined();
    const nulls = compileAction(def({ allowNulls: true }), { version: 1, userAgent: 'ua' }).buildRequest(scope);
    expect(JSON.parse(nulls.body ?? '')).toEqual({
      n: null,
      items: null,
      text: 'n= job job-1#2',
      note: null,
      list: [null, 1],
      key: 'idem-1',
    });
  });

  it('refuses a substituted header value that would inject CR/LF', () => {
    const action = compileAction(def({}), { version: 1, userAgent: 'ua' });
    expect(() => action.buildRequest({ params: { user: 'u', note: 'x\r\nX-Evil: 1' }, context: {}, job })).toThrow(InvalidParamsError);
  });

  it('names each definition problem by path', () => {
    const problems = problemsOf(() =>
      parseActionDefinition({
        id: 'bad',
        name: 'b',
        endpoint: { url: 'https://x.test', method: 'GET', path: '/{{params.ghost}}' },
        body: { a: 1 },
      }),
    );
    expect(problems.map((p) => p.path).sort()).toEqual(['body', 'endpoint.path']);
    expect(
      problemsOf(() => parseActionDefinition({ id: 'bad', name: 'b', endpoint: { url: 'ftp://x.test', method: 'GET' }, oops: 1 }))
        .map((p) => p.path)
        .sort(),
    ).toEqual(['', 'endpoint.url']);
  });

  it('a __proto__ key in a body or params does not reach any prototype', () => {
    const d = parseActionDefinition({
      id: 'p',
      name: 'p',
      endpoint: { url: 'https://x.test', method: 'POST' },
      parameters: { o: { type: 'listObject', fields: { a: { type: 'integer' } } } },
      body: JSON.parse('{"__proto__": {"polluted": 1}, "o": "{{params.o}}"}'),
    });
    const req = compileAction(d, { version: 1, userAgent: 'ua' }).buildRequest({ params: { o: [{ a: 1 }] }, context: {}, job });
    expect(JSON.parse(req.body ?? '')).toEqual(JSON.parse('{"__proto__": {"polluted": 1}, "o": [{"a": 1}]}'));
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});
