import fc from 'fast-check';
import { scalarParamTypes, type ParamSpec } from '../../src/actions/action-schema.js';

/** Generators of parameter specs, valid parameter values and valid action definitions, for property tests. */

const PROTOTYPE_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/** Strings over an alphabet: much cheaper to generate than fc.stringMatching. */
const over = (alphabet: string, minLength: number, maxLength: number) =>
  fc.string({ unit: fc.constantFrom(...alphabet), minLength, maxLength });
const LETTERS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
const DIGITS = '0123456789';

/** A parameter or field name the schema accepts. */
export const paramNameArb = fc
  .tuple(over(`${LETTERS}_`, 1, 1), over(`${LETTERS}${DIGITS}_`, 0, 12))
  .map(([a, b]) => a + b)
  .filter((n) => !PROTOTYPE_KEYS.has(n));

export type ScalarType = (typeof scalarParamTypes)[number];

/** A spec of any type; listObject fields are scalar, as journeys use them. */
export const paramSpecArb: fc.Arbitrary<ParamSpec> = fc.oneof(
  fc.record({ type: fc.constantFrom(...scalarParamTypes), required: fc.option(fc.boolean(), { nil: undefined }) }),
  fc.record({
    type: fc.constant('listObject' as const),
    required: fc.option(fc.boolean(), { nil: undefined }),
    fields: fc.dictionary(
      paramNameArb,
      fc.record({ type: fc.constantFrom(...scalarParamTypes), required: fc.option(fc.boolean(), { nil: undefined }) }),
      { minKeys: 1, maxKeys: 4 },
    ),
  }),
);

export const parametersArb = fc.dictionary(paramNameArb, paramSpecArb, { minKeys: 1, maxKeys: 6 });

/** Characters a header value may carry once substituted: visible ASCII and space. */
const headerSafeChar = fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c));

const dateArb = fc
  .date({ min: new Date('1970-01-01T00:00:00Z'), max: new Date('2100-12-31T23:59:59Z'), noInvalidDate: true })
  .map((d) => d.toISOString().slice(0, 10));
const dateTimeArb = fc.oneof(
  fc
    .date({ min: new Date('1970-01-01T00:00:00Z'), max: new Date('2100-12-31T23:59:59Z'), noInvalidDate: true })
    .chain((d) =>
      fc.constantFrom(
        d.toISOString(),
        d.toISOString().replace(/\.\d{3}Z$/, 'Z'),
        d.toISOString().replace(/\.\d{3}Z$/, '+02:00'),
        d.toISOString().replace(/:\d{2}\.\d{3}Z$/, '-05:30'),
      ),
    ),
  fc.integer({ min: 0, max: 4_102_444_800_000 }),
);

/**
 * A valid value of a scalar type. With `headerSafe`, strings hold only visible ASCII and space, so
 * that any of them may go into a header.
 */
export function scalarValueArb(type: ScalarType, headerSafe: boolean): fc.Arbitrary<unknown> {
  const str = headerSafe ? fc.string({ unit: headerSafeChar, maxLength: 20 }) : fc.string({ unit: 'binary', maxLength: 20 });
  const int = fc.oneof(fc.integer(), fc.maxSafeInteger());
  const dec = fc.double({ noNaN: true, noDefaultInfinity: true });
  switch (type) {
    case 'string':
      return str;
    case 'integer':
      return int;
    case 'decimal':
      return dec;
    case 'boolean':
      return fc.boolean();
    case 'date':
      return dateArb;
    case 'dateTime':
      return dateTimeArb;
    case 'listString':
      return fc.array(str, { maxLength: 4 });
    case 'listInteger':
      return fc.array(int, { maxLength: 4 });
    case 'listDecimal':
      return fc.array(dec, { maxLength: 4 });
    case 'listBoolean':
      return fc.array(fc.boolean(), { maxLength: 4 });
    case 'listDateTime':
      return fc.array(dateTimeArb, { maxLength: 4 });
  }
}

/** An object of valid values for these specs; optional entries are sometimes left out. */
export function valuesArb(specs: Record<string, ParamSpec>, headerSafe: boolean): fc.Arbitrary<Record<string, unknown>> {
  const shape: Record<string, fc.Arbitrary<unknown>> = {};
  const required: string[] = [];
  for (const [name, spec] of Object.entries(specs)) {
    shape[name] =
      spec.type === 'listObject'
        ? fc.array(valuesArb(spec.fields ?? {}, headerSafe), { maxLength: 3 })
        : scalarValueArb(spec.type, headerSafe);
    if (spec.required) required.push(name);
  }
  return fc.record(shape, { requiredKeys: required });
}

// A literal string never holds `{{` or `}}`: those are placeholder syntax, and a stray one is a definition error.
const literalArb = fc.oneof(
  fc.string({ maxLength: 8 }).filter((s) => !s.includes('{{') && !s.includes('}}')),
  fc.integer(),
  fc.boolean(),
  fc.constant(null),
);
const segmentArb = over('abcdefghijklmnopqrstuvwxyz0123456789-', 1, 8);
const tokenArb = over(`${LETTERS}${DIGITS}-`, 1, 10).map((t) => `X-${t}`);

/** A definition with templates that use its parameters everywhere a template may go. */
export interface GeneratedAction {
  definition: Record<string, unknown>;
  /** Parameter names referenced from a header. */
  inHeaders: string[];
  /** Parameter names that alone make a path segment: "." or ".." there is refused at enqueue. */
  wholeSegments: string[];
}

export const actionArb: fc.Arbitrary<GeneratedAction> = parametersArb.chain((parameters) => {
  const names = Object.keys(parameters);
  const ref = fc.constantFrom(...names).map((n) => `{{params.${n}}}`);
  const embedded = fc.tuple(segmentArb, ref, segmentArb).map(([a, r, b]) => `${a} ${r} ${b}`);
  // A path's own text is sent as written, so it holds no space (refused when the action is saved).
  const embeddedInPath = fc.tuple(segmentArb, ref, segmentArb).map(([a, r, b]) => `${a}-${r}-${b}`);
  const leaf = fc.oneof(literalArb, ref, embedded, fc.constantFrom('{{job.id}}', '{{job.attempt}}', '{{context.journeyId}} step'));
  const bodyArb = fc.letrec<{ node: unknown }>((tie) => ({
    node: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      leaf,
      fc.array(tie('node'), { maxLength: 3 }),
      fc.dictionary(over('abcdefghijklmnopqrstuvwxyz_', 1, 8), tie('node'), { maxKeys: 4 }),
    ),
  })).node;
  const headers = fc.uniqueArray(fc.tuple(tokenArb, fc.oneof(ref, embedded)), {
    maxLength: 3,
    selector: ([name]) => name.toLowerCase(),
  });
  return fc
    .record({
      method: fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE'),
      basePath: fc.array(segmentArb, { maxLength: 2 }),
      path: fc.array(fc.oneof(segmentArb, ref, embeddedInPath), { minLength: 1, maxLength: 3 }),
      query: fc.dictionary(over('abcdefghijklmnopqrstuvwxyz', 1, 6), fc.oneof(ref, embedded, segmentArb), { maxKeys: 3 }),
      headers,
      body: bodyArb,
      allowNulls: fc.boolean(),
    })
    .map((g) => {
      const hasBody = g.method !== 'GET' && g.method !== 'DELETE';
      const definition: Record<string, unknown> = {
        id: 'generated',
        name: 'generated',
        endpoint: {
          url: `https://api.example.test/${g.basePath.join('/')}`,
          path: `/${g.path.join('/')}`,
          method: g.method,
          query: g.query,
          headers: Object.fromEntries(g.headers),
        },
        parameters,
        allowNulls: g.allowNulls,
        ...(hasBody ? { body: g.body } : {}),
      };
      const inHeaders = names.filter((n) => g.headers.some(([, t]) => t.includes(`{{params.${n}}}`)));
      const wholeSegments = names.filter((n) => g.path.includes(`{{params.${n}}}`));
      return { definition, inHeaders, wholeSegments };
    });
});

/** A value that alone in a path segment is refused at enqueue (test/unit/path-values.test.ts). */
export const isDotSegment = (value: unknown) => value === '.' || value === '..';

/** Valid params for a generated action: values of its specs, none of them a dot segment where it fills one. */
export function actionParamsArb(action: GeneratedAction, headerSafe: boolean): fc.Arbitrary<Record<string, unknown>> {
  const specs = action.definition.parameters as Record<string, ParamSpec>;
  return valuesArb(specs, headerSafe).filter((params) => !action.wholeSegments.some((n) => isDotSegment(params[n])));
}
