import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { propertyRuns } from '../support/property-runs.js';
import { compileAction, parseActionDefinition } from '../../src/actions/compile-action.js';
import { InvalidParamsError } from '../../src/errors/errors.js';
import { actionArb, actionParamsArb, isDotSegment } from '../support/action-arbitraries.js';

/** What undici sends: an RFC 9110 token as a name, tab / visible ASCII / Latin-1 as a value. */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

const contextArb = fc.record({ journeyId: fc.string({ maxLength: 10 }), profileId: fc.string({ maxLength: 10 }) }, { requiredKeys: [] });
const jobArb = fc.record({
  id: fc.uuid(),
  attempt: fc.integer({ min: 1, max: 50 }),
  idempotencyKey: fc.string({ unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)), minLength: 1, maxLength: 40 }),
});

/** The request of a generated action, with its parameters, context and job. */
const renderCase = (headerSafe: boolean) =>
  actionArb.chain((action) =>
    fc.record({
      action: fc.constant(action),
      params: actionParamsArb(action, headerSafe),
      context: contextArb,
      job: jobArb,
    }),
  );

function checkRequest(req: ReturnType<ReturnType<typeof compileAction>['buildRequest']>, hasBody: boolean) {
  // The path cannot move the request to another host or scheme, whatever the values.
  const url = new URL(req.origin + req.path);
  expect(url.origin).toBe('https://api.example.test');
  expect(req.path.startsWith('/')).toBe(true);
  for (const [name, value] of Object.entries(req.headers)) {
    expect(name).toMatch(HEADER_NAME);
    expect(value).toMatch(HEADER_VALUE);
  }
  if (hasBody) {
    expect(() => JSON.parse(req.body ?? '')).not.toThrow();
    expect(req.headers['content-type']).toBe('application/json');
  } else {
    expect(req.body).toBeUndefined();
  }
}

describe('template rendering (property)', () => {
  it('a valid definition with valid params always renders a request: URL on its origin, headers undici sends, JSON body', () => {
    fc.assert(
      fc.property(renderCase(true), ({ action, params, context, job }) => {
        const def = parseActionDefinition(action.definition);
        const compiled = compileAction(def, { version: 1, userAgent: 'action-relay/prop' });
        const checked = compiled.validateParams(params);
        expect(checked.ok).toBe(true);
        if (!checked.ok) return;
        const req = compiled.buildRequest({ params: checked.value, context, job });
        checkRequest(req, def.body !== undefined);
        expect(req.headers['idempotency-key']).toBe(job.idempotencyKey);
      }),
      { numRuns: propertyRuns(400) },
    );
  });

  it('any string value either renders or is refused as invalid params naming a parameter used in a header', () => {
    fc.assert(
      fc.property(renderCase(false), ({ action, params, context, job }) => {
        const compiled = compileAction(parseActionDefinition(action.definition), { version: 1, userAgent: 'ua' });
        const checked = compiled.validateParams(params);
        expect(checked.ok).toBe(true);
        if (!checked.ok) return;
        try {
          checkRequest(compiled.buildRequest({ params: checked.value, context, job }), action.definition.body !== undefined);
        } catch (err) {
          expect(err).toBeInstanceOf(InvalidParamsError);
          const problems = (err as InvalidParamsError).problems;
          expect(problems).toHaveLength(1);
          expect(action.inHeaders.map((n) => `params.${n}`)).toContain(problems[0]?.path);
        }
      }),
      { numRuns: propertyRuns(300) },
    );
  });

  it('an exact placeholder in the body keeps the typed value; a path segment decodes back to the value', () => {
    const caseArb = fc
      .record({
        s: fc.string({ unit: 'binary', maxLength: 30 }),
        n: fc.double({ noNaN: true, noDefaultInfinity: true }),
        items: fc.array(fc.record({ sku: fc.string({ maxLength: 5 }), qty: fc.integer() }), { maxLength: 3 }),
      })
      .filter((p) => !isDotSegment(p.s));
    const compiled = compileAction(
      parseActionDefinition({
        id: 'typed',
        name: 'typed',
        endpoint: { url: 'https://api.example.test/v1', path: '/things/{{params.s}}', method: 'POST', query: { s: '{{params.s}}' } },
        parameters: {
          s: { type: 'string', required: true },
          n: { type: 'decimal', required: true },
          items: { type: 'listObject', required: true, fields: { sku: { type: 'string' }, qty: { type: 'integer' } } },
        },
        body: { s: '{{params.s}}', n: '{{params.n}}', items: '{{params.items}}' },
      }),
      { version: 1, userAgent: 'ua' },
    );
    fc.assert(
      fc.property(caseArb, (params) => {
        const req = compiled.buildRequest({ params, context: {}, job: { id: 'j', attempt: 1, idempotencyKey: 'k' } });
        const url = new URL(req.origin + req.path);
        // Lone surrogates cannot survive UTF-8: compare with what JSON and URL encoding make of them.
        const wire = (v: unknown) => JSON.parse(JSON.stringify(v)) as unknown;
        expect(JSON.parse(req.body ?? '')).toEqual(wire(params));
        expect(url.pathname.startsWith('/v1/things/')).toBe(true);
        expect(decodeURIComponent(url.pathname.slice('/v1/things/'.length))).toBe(Buffer.from(params.s, 'utf8').toString('utf8'));
        expect(url.searchParams.get('s')).toBe(Buffer.from(params.s, 'utf8').toString('utf8'));
      }),
      { numRuns: propertyRuns(300) },
    );
  });
});
