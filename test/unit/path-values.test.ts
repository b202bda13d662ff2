import { describe, expect, it } from 'vitest';
import { compileAction, parseActionDefinition } from '../../src/actions/compile-action.js';
import { InvalidParamsError } from '../../src/errors/errors.js';

/* What substituted values may make of a request's URL: never a "." or ".." segment, never a lone surrogate. */
const compile = (path: string, extra: Record<string, unknown> = {}) =>
  compileAction(
    parseActionDefinition({
      id: 'p',
      name: 'p',
      endpoint: { url: 'https://api.partner.test/base', path, method: 'POST', ...extra },
      parameters: {
        name: { type: 'string' },
        tags: { type: 'listString' },
        items: { type: 'listObject', fields: { sku: { type: 'string' } } },
      },
    }),
    { version: 1, userAgent: 't' },
  );
const scope = (params: Record<string, unknown>, context: Record<string, unknown> = {}) => ({
  params,
  context,
  job: { id: 'j', attempt: 1, idempotencyKey: 'j' },
});
function thrown(fn: () => unknown): InvalidParamsError {
  try {
    fn();
  } catch (err: unknown) {
    if (err instanceof InvalidParamsError) return err;
    throw err;
  }
  throw new Error('did not throw');
}

describe('dot segments', () => {
  it.each(['.', '..'])('a parameter making a whole segment "%s" is refused at enqueue, naming it', (name) => {
    const action = compile('/files/{{params.name}}/raw');
    const checked = action.validateParams({ name });
    expect(checked).toEqual({ ok: false, problems: [{ path: 'params.name', message: expect.stringContaining('"." or ".."') }] });
  });

  it.each(['...', 'a..b', '.hidden', '%2e%2e'])('"%s" is a value like another, sent encoded', (name) => {
    const action = compile('/files/{{params.name}}/raw');
    expect(action.validateParams({ name }).ok).toBe(true);
    expect(action.buildRequest(scope({ name })).path).toBe(`/base/files/${encodeURIComponent(name)}/raw`);
  });

  it('a segment made of several placeholders is checked when the request is built, naming each', () => {
    const action = compile('/x/{{context.a}}{{context.b}}/y');
    const err = thrown(() => action.buildRequest(scope({}, { a: '.', b: '.' })));
    expect(err.problems.map((p) => p.path)).toEqual(['context.a', 'context.b']);
    expect(action.buildRequest(scope({}, { a: '.', b: 'x' })).path).toBe('/base/x/.x/y');
  });
});

describe('lone UTF-16 surrogates', () => {
  it.each([
    [{ name: 'a\uD800b' }, 'params.name'],
    [{ tags: ['ok', '\uDC00'] }, 'params.tags[1]'],
    [{ items: [{ sku: 'x\uDBFF' }] }, 'params.items[0].sku'],
  ])('a param %j is refused at enqueue, naming %s', (params, path) => {
    expect(compile('/x').validateParams(params)).toEqual({
      ok: false,
      problems: [{ path, message: 'holds a lone UTF-16 surrogate' }],
    });
  });

  it('a whole pair (an emoji) is fine, and encoded', () => {
    const action = compile('/x/{{params.name}}');
    expect(action.validateParams({ name: '😀' }).ok).toBe(true);
    expect(action.buildRequest(scope({ name: '😀' })).path).toBe('/base/x/%F0%9F%98%80');
  });

  it('a context value in the path or the query is an InvalidParamsError naming it, not a URIError', () => {
    const inPath = compile('/x/{{context.profileId}}');
    expect(thrown(() => inPath.buildRequest(scope({}, { profileId: 'p\uD800' }))).problems).toEqual([
      { path: 'context.profileId', message: expect.stringContaining('lone UTF-16 surrogate') },
    ]);
    const inQuery = compile('/x', { query: { who: 'id-{{context.profileId}}', exact: '{{context.nodeId}}' } });
    expect(thrown(() => inQuery.buildRequest(scope({}, { profileId: 'p\uDFFF' }))).problems[0]?.path).toBe('context.profileId');
    expect(thrown(() => inQuery.buildRequest(scope({}, { nodeId: '\uD800' }))).problems[0]?.path).toBe('context.nodeId');
    expect(thrown(() => inQuery.buildRequest(scope({}, { nodeId: ['ok', '\uD800'] }))).problems[0]?.path).toBe('context.nodeId');
  });
});
