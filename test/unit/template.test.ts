import { describe, expect, it } from 'vitest';
import { compileAction, parseActionDefinition } from '../../src/actions/compile-action.js';
import {
  compileJson,
  compileString,
  hasLoneSurrogate,
  MISSING,
  stringify,
  type CompileContext,
  type RenderScope,
} from '../../src/actions/template.js';
import { ValidationError } from '../../src/errors/errors.js';

/* The template module itself: what a placeholder reads, how a value reads inside text, what a
 * definition's templates are refused for. Expected values are written out. */

const scope: RenderScope = {
  params: { n: 2.5, flag: true, none: null, list: [1, 'a'], obj: { a: 1 } },
  context: { region: 'eu' },
  job: { id: 'job-1', attempt: 3, idempotencyKey: 'idem-1' },
};

const cx = (...declared: string[]): CompileContext => ({ declaredParams: new Set(declared), problems: [] });

function problemsOf(template: string, ...declared: string[]): { path: string; message: string }[] {
  const c = cx(...declared);
  compileString(template, 'endpoint.path', c);
  return c.problems;
}

describe('stringify: a value inside longer text', () => {
  it('absent and null read as nothing, strings as themselves, numbers and booleans as written, the rest as JSON', () => {
    expect(stringify(undefined)).toBe('');
    expect(stringify(null)).toBe('');
    expect(stringify('a b')).toBe('a b');
    expect(stringify(2.5)).toBe('2.5');
    expect(stringify(false)).toBe('false');
    expect(stringify([1, 'a'])).toBe('[1,"a"]');
    expect(stringify({ a: 1 })).toBe('{"a":1}');
  });

  it('an embedded null parameter renders as nothing, not "null"', () => {
    expect(compileString('n=[{{params.none}}]', 'body.text', cx('none')).render(scope)).toBe('n=[]');
  });
});

describe('hasLoneSurrogate: what no UTF-8 can carry', () => {
  it('finds half a pair anywhere, in one-byte and two-byte strings alike', () => {
    const high = '\uD83D';
    const low = '\uDE00';
    const cases: [string, boolean][] = [
      ['', false],
      ['plain ascii', false],
      ['é'.repeat(300), false],
      ['€ and 日本語', false],
      [`emoji ${high}${low} whole`, false],
      [high, true],
      [low, true],
      [`ends with ${high}`, true],
      [`${low} starts the text`, true],
      [`${low}${high}`, true], // the halves in the wrong order
      [`${high}${low}${low}`, true], // a pair, then a stray low half
      [`${'€'.repeat(200)}${high}x`, true],
    ];
    for (const [s, lone] of cases) expect([s, hasLoneSurrogate(s)]).toEqual([s, lone]);
  });
});

describe('compileString', () => {
  it('renders params, context and job fields in text; spaces inside the braces are allowed', () => {
    const t = compileString('{{ params.n }}/{{context.region}}/{{job.id}}#{{job.attempt}}/{{ job.idempotencyKey }}', 'p', cx('n'));
    expect(t.render(scope)).toBe('2.5/eu/job-1#3/idem-1');
    expect(t.isConstant).toBe(false);
    expect(t.refs.map((r) => r.ref)).toEqual(['params.n', 'context.region', 'job.id', 'job.attempt', 'job.idempotencyKey']);
    expect(t.exact).toBeUndefined();
  });

  it('a string without placeholders is constant, whatever braces it holds', () => {
    expect(compileString('/v1/items', 'p', cx()).isConstant).toBe(true);
    expect(compileString('{single}', 'p', cx()).isConstant).toBe(true);
    expect(compileString('', 'p', cx()).isConstant).toBe(true);
    expect(compileString('/v1/{{params.n}}', 'p', cx('n')).isConstant).toBe(false);
  });

  it('a string that is one placeholder, spaces inside the braces or not, keeps the typed value', () => {
    expect(compileString('{{params.n}}', 'p', cx('n')).exact?.(scope)).toBe(2.5);
    expect(compileString('{{ params.n }}', 'p', cx('n')).exact?.(scope)).toBe(2.5);
    expect(compileString('{{params.n}} ', 'p', cx('n')).exact).toBeUndefined();
  });

  it('encodes substituted values only, never the literal text', () => {
    const t = compileString('/a b/{{context.region}}', 'p', cx());
    expect(t.render({ ...scope, context: { region: 'x/y' } }, encodeURIComponent)).toBe('/a b/x%2Fy');
  });

  it('a parameter or context field not given reads as nothing; an inherited property is not read', () => {
    const t = compileString('[{{params.gone}}][{{context.toString}}]', 'p', cx('gone'));
    expect(t.render(scope)).toBe('[][]');
  });

  it('names an undeclared parameter and an unknown job field at the path', () => {
    expect(problemsOf('/{{params.ghost}}')).toEqual([{ path: 'endpoint.path', message: 'references undeclared parameter "ghost"' }]);
    expect(problemsOf('/{{job.name}}')).toEqual([
      { path: 'endpoint.path', message: 'unknown job field "name" (id, attempt, idempotencyKey)' },
    ]);
    expect(problemsOf('/{{job.id}}/{{job.attempt}}/{{job.idempotencyKey}}/{{params.n}}/{{context.any}}', 'n')).toEqual([]);
  });

  it('refuses a malformed placeholder: an unclosed one, a stray closing, one with an unknown source', () => {
    const malformed = {
      path: 'endpoint.path',
      message: 'malformed placeholder; use {{params.NAME}}, {{context.FIELD}} or {{job.id|attempt|idempotencyKey}}',
    };
    expect(problemsOf('/x/{{params.n', 'n')).toEqual([malformed]);
    expect(problemsOf('/x/params.n}}', 'n')).toEqual([malformed]);
    expect(problemsOf('/x/{{secrets.key}}')).toEqual([malformed]);
    // The braces left on each side once a placeholder is taken out still make a stray "{{".
    expect(problemsOf('/x/{{{params.n}}{', 'n')).toEqual([malformed]);
    expect(problemsOf('/x/{single}/{{params.n}}', 'n')).toEqual([]);
  });
});

describe('compileJson', () => {
  it('drops a missing value from objects and arrays, or gives null with allowNulls; a missing top-level value is MISSING', () => {
    const node = { a: '{{params.gone}}', b: ['{{params.gone}}', 'x'], c: 'fixed', d: 7 };
    expect(compileJson(node, 'body', cx('gone'), false)(scope)).toBe('{"b":["x"],"c":"fixed","d":7}');
    expect(compileJson(node, 'body', cx('gone'), true)(scope)).toBe('{"a":null,"b":[null,"x"],"c":"fixed","d":7}');
    expect(compileJson(['{{params.gone}}', '{{params.gone}}'], 'body', cx('gone'), false)(scope)).toBe('[]');
    expect(compileJson('{{params.gone}}', 'body', cx('gone'), false)(scope)).toBe(MISSING);
    expect(compileJson('{{params.gone}}', 'body', cx('gone'), true)(scope)).toBe('null');
  });

  it('keeps constants, typed exact values and renders text', () => {
    const node = { s: 'plain', n: '{{params.n}}', o: '{{params.obj}}', t: 'n={{params.n}}', z: null, f: false };
    expect(JSON.parse(compileJson(node, 'body', cx('n', 'obj'), false)(scope) as string)).toEqual({
      s: 'plain',
      n: 2.5,
      o: { a: 1 },
      t: 'n=2.5',
      z: null,
      f: false,
    });
  });

  it('writes the same text as JSON.stringify of the value: key order (integer-like keys first), escapes, nesting', () => {
    const node = {
      z: 1,
      10: 'ten',
      2: ['{{params.obj}}', 'q"uote\\ {{params.n}}'],
      ['__proto__']: { '': [] },
      nested: { e: [{}], u: '\u2028é' },
    };
    const text = compileJson(node, 'body', cx('n', 'obj'), false)(scope) as string;
    const value = JSON.parse(JSON.stringify(node).replace('{{params.obj}}', 'OBJ').replace('{{params.n}}', '2.5'));
    (value as Record<string, unknown[]>)['2']![0] = { a: 1 };
    expect(text).toBe(JSON.stringify(value));
  });

  it('names problems by their place in the body', () => {
    const c = cx();
    compileJson({ list: ['ok', '{{params.ghost}}'], deep: { x: '{{job.nope}}' } }, 'body', c, false);
    expect(c.problems).toEqual([
      { path: 'body.list[1]', message: 'references undeclared parameter "ghost"' },
      { path: 'body.deep.x', message: 'unknown job field "nope" (id, attempt, idempotencyKey)' },
    ]);
  });

  it('a constant string in a definition body is sent as written', () => {
    const def = parseActionDefinition({
      id: 'c',
      name: 'c',
      endpoint: { url: 'https://api.example.test', method: 'POST' },
      body: { kind: 'order', tags: ['a', 'b'] },
    });
    const req = compileAction(def, { version: 1, userAgent: 'ua' }).buildRequest({ params: {}, context: {}, job: scope.job });
    expect(req.body).toBe('{"kind":"order","tags":["a","b"]}');
  });

  it('a definition with an unknown job field is refused naming where', () => {
    let err: unknown;
    try {
      parseActionDefinition({
        id: 'j',
        name: 'j',
        endpoint: { url: 'https://api.example.test', method: 'POST' },
        body: { a: ['{{job.nope}}'] },
      });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).problems).toEqual([
      { path: 'body.a[0]', message: 'unknown job field "nope" (id, attempt, idempotencyKey)' },
    ]);
  });
});
