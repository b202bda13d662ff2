import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { propertyRuns } from '../support/property-runs.js';
import { compileParamValidator, paramsSchema, quickObject } from '../../src/actions/param-validator.js';
import type { ParamSpec } from '../../src/actions/action-schema.js';
import { parametersArb, valuesArb } from '../support/action-arbitraries.js';

/** Anything a caller might send as params: JSON, odd objects, values of the wrong type under declared names. */
function inputArb(specs: Record<string, ParamSpec>): fc.Arbitrary<unknown> {
  const names = Object.keys(specs);
  const wild = fc.anything({ maxDepth: 3, withNullPrototype: true, withSparseArray: true, withObjectString: true });
  return fc.oneof(
    wild,
    fc.jsonValue({ maxDepth: 3 }),
    // Declared names with random values: deep wrong types inside lists of objects too.
    fc.dictionary(fc.constantFrom(...names, '__proto__', 'constructor', 'extra'), fc.oneof(wild, fc.array(fc.jsonValue({ maxDepth: 2 }))), {
      maxKeys: names.length + 2,
    }),
    valuesArb(specs, false),
  );
}

/** Valid values with one declared parameter given something else: a number of any kind, a string, a list, anything. */
function oneWrong(specs: Record<string, ParamSpec>): fc.Arbitrary<unknown> {
  const names = Object.keys(specs);
  const other = fc.oneof(
    fc.double(),
    fc.integer(),
    fc.string(),
    fc.string({ unit: 'binary' }),
    fc.array(fc.oneof(fc.double(), fc.string({ unit: 'binary' }), fc.boolean())),
    fc.anything({ maxDepth: 2 }),
  );
  return fc
    .tuple(valuesArb(specs, false), fc.constantFrom(...names), other)
    .map(([values, name, v]) => ({ ...(values as Record<string, unknown>), [name]: v }));
}

describe('param validation (property)', () => {
  it('random inputs are accepted, or refused with problems that each name a field under params: never a throw', () => {
    fc.assert(
      fc.property(
        parametersArb.chain((specs) => fc.tuple(fc.constant(specs), inputArb(specs))),
        ([specs, input]) => {
          const result = compileParamValidator(specs)(input);
          if (result.ok) {
            for (const key of Object.keys(result.value)) expect(Object.keys(specs)).toContain(key);
            return;
          }
          expect(result.problems.length).toBeGreaterThan(0);
          for (const p of result.problems) {
            expect(p.path).toMatch(/^params(\.|\[|$)/);
            expect(p.message).toEqual(expect.any(String));
            expect(p.message.length).toBeGreaterThan(0);
          }
        },
      ),
      { numRuns: propertyRuns(500) },
    );
  });

  it('the plain check (no copy of the params) accepts only what the zod schema accepts, and accepts valid values', () => {
    fc.assert(
      fc.property(
        parametersArb.chain((specs) => fc.tuple(fc.constant(specs), fc.oneof(inputArb(specs), oneWrong(specs)))),
        ([specs, input]) => {
          if (quickObject(specs)(input)) expect(paramsSchema(specs).safeParse(input).success).toBe(true);
        },
      ),
      { numRuns: propertyRuns(1000) },
    );
    fc.assert(
      fc.property(
        parametersArb.chain((specs) => fc.tuple(fc.constant(specs), valuesArb(specs, false))),
        ([specs, values]) => {
          expect(quickObject(specs)(values)).toBe(true);
        },
      ),
      { numRuns: propertyRuns(300) },
    );
  });

  it('the plain check agrees with zod for parameters named like Object.prototype members (valueOf, toString)', () => {
    const named = fc
      .uniqueArray(fc.constantFrom('valueOf', 'toString', 'hasOwnProperty', 'isPrototypeOf', 'a'), { minLength: 1, maxLength: 3 })
      .chain((names) =>
        fc.tuple(...names.map(() => parametersArb.map((specs) => Object.values(specs)[0]))).map((list) => {
          const specs: Record<string, ParamSpec> = {};
          names.forEach((name, i) => {
            const spec = list[i];
            if (spec) specs[name] = spec;
          });
          return specs;
        }),
      )
      .filter((specs) => Object.keys(specs).length > 0);
    fc.assert(
      fc.property(
        named.chain((specs) => fc.tuple(fc.constant(specs), fc.oneof(inputArb(specs), valuesArb(specs, false), oneWrong(specs)))),
        ([specs, input]) => {
          if (quickObject(specs)(input)) expect(paramsSchema(specs).safeParse(input).success).toBe(true);
        },
      ),
      { numRuns: propertyRuns(500) },
    );
  });

  it('valid values of every declared type are accepted unchanged', () => {
    fc.assert(
      fc.property(
        parametersArb.chain((specs) => fc.tuple(fc.constant(specs), valuesArb(specs, false))),
        ([specs, values]) => {
          const result = compileParamValidator(specs)(values);
          expect(result).toEqual({ ok: true, value: values });
        },
      ),
      { numRuns: propertyRuns(300) },
    );
  });

  it('a required parameter left out is named as required', () => {
    fc.assert(
      fc.property(
        parametersArb
          .filter((specs) => Object.values(specs).some((s) => s.required))
          .chain((specs) => fc.tuple(fc.constant(specs), valuesArb(specs, true))),
        ([specs, values]) => {
          const missing = Object.keys(specs).find((n) => specs[n]?.required) as string;
          const input: Record<string, unknown> = { ...values };
          delete input[missing];
          const result = compileParamValidator(specs)(input);
          expect(result.ok).toBe(false);
          if (!result.ok) expect(result.problems).toContainEqual({ path: `params.${missing}`, message: 'required' });
        },
      ),
      { numRuns: propertyRuns(200) },
    );
  });
});
