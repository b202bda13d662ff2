import { z } from 'zod';
import type { ParamSpec } from './action-schema.js';
import type { FieldProblem } from '../errors/errors.js';
import { hasLoneSurrogate } from './template.js';

const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;
const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/;

/** A calendar date as YYYY-MM-DD that exists (no February 30th). */
function isDateString(s: string): boolean {
  const m = DATE.exec(s);
  if (!m) return false;
  const d = new Date(`${s}T00:00:00Z`);
  return !Number.isNaN(d.getTime()) && d.getUTCDate() === Number(m[3]);
}

/** An ISO-8601 date-time with an offset (or Z) that Date can read. */
function isDateTimeString(s: string): boolean {
  return DATE_TIME.test(s) && !Number.isNaN(Date.parse(s));
}

const date = z.string({ error: 'expected a date YYYY-MM-DD' }).refine(isDateString, 'expected a date YYYY-MM-DD');

const EPOCH_MS = 'expected epoch milliseconds: a whole number, 0 or more';
const dateTime = z.union(
  [z.string().refine(isDateTimeString, 'expected ISO-8601 with offset'), z.number().int(EPOCH_MS).nonnegative(EPOCH_MS)],
  { error: 'expected an ISO-8601 date-time with offset or epoch milliseconds' },
);

const integer = z.number({ error: 'expected an integer' }).int('expected an integer').refine(Number.isSafeInteger, 'integer out of range');
const decimal = z.number({ error: 'expected a number' }).refine(Number.isFinite, 'expected a finite number');

/** A string a URL, a header or UTF-8 can carry: no lone UTF-16 surrogate. */
const text = z.string({ error: 'expected a string' }).refine((s) => !hasLoneSurrogate(s), 'holds a lone UTF-16 surrogate');

const scalar: Record<Exclude<ParamSpec['type'], 'listObject'>, z.ZodType> = {
  string: text,
  integer,
  decimal,
  boolean: z.boolean({ error: 'expected a boolean' }),
  date,
  dateTime,
  listString: z.array(text, { error: 'expected a list of strings' }),
  listInteger: z.array(integer, { error: 'expected a list of integers' }),
  listDecimal: z.array(decimal, { error: 'expected a list of numbers' }),
  listBoolean: z.array(z.boolean({ error: 'expected a boolean' }), { error: 'expected a list of booleans' }),
  listDateTime: z.array(dateTime, { error: 'expected a list of date-times' }),
};

/** The zod type of one parameter or response field type. */
export function typeSchema(type: Exclude<ParamSpec['type'], 'listObject'>): z.ZodType {
  return scalar[type];
}

function specSchema(spec: ParamSpec): z.ZodType {
  if (spec.type === 'listObject') {
    return z.array(objectSchema(spec.fields ?? {}), { error: 'expected a list of objects' });
  }
  return scalar[spec.type];
}

function objectSchema(fields: Record<string, ParamSpec>): z.ZodType {
  const shape: Record<string, z.ZodType> = {};
  for (const [name, spec] of Object.entries(fields)) {
    const base = specSchema(spec);
    shape[name] = spec.required ? base : base.optional();
  }
  return z.strictObject(shape, { error: 'expected an object' });
}

function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let v = input;
  for (const seg of path) {
    if (v === null || typeof v !== 'object' || !Object.hasOwn(v, seg)) return undefined;
    v = (v as Record<PropertyKey, unknown>)[seg];
  }
  return v;
}

/** Turns zod issues into problems whose path names the field, under `root`. */
export function formatIssues(error: z.ZodError, root: string, input?: unknown): FieldProblem[] {
  return error.issues.map((issue) => {
    let path = root;
    for (const seg of issue.path) path += typeof seg === 'number' ? `[${seg}]` : `${path ? '.' : ''}${String(seg)}`;
    let message = issue.message;
    if (issue.code === 'unrecognized_keys') message = `unknown field(s): ${issue.keys.join(', ')}`;
    // An absent field fails its type check (a union like dateTime's included): say what is wrong.
    if ((issue.code === 'invalid_type' || issue.code === 'invalid_union') && valueAt(input, issue.path) === undefined) message = 'required';
    return { path: path || root, message };
  });
}

export type ParamValidator = (params: unknown) => { ok: true; value: Record<string, unknown> } | { ok: false; problems: FieldProblem[] };

type Check = (v: unknown) => boolean;

const isText: Check = (v) => typeof v === 'string' && !hasLoneSurrogate(v);
const isInteger: Check = (v) => typeof v === 'number' && Number.isSafeInteger(v);
const isDecimal: Check = (v) => typeof v === 'number' && Number.isFinite(v);
const isBoolean: Check = (v) => typeof v === 'boolean';
const isDate: Check = (v) => typeof v === 'string' && isDateString(v);
/** A string by the same test as the schema's; epoch milliseconds (the rare case) by the schema. */
const isDateTime: Check = (v) => (typeof v === 'string' ? isDateTimeString(v) : dateTime.safeParse(v).success);
/** Every index, holes included (`every` would skip the hole of a sparse array, which zod refuses). */
const listOf =
  (item: Check): Check =>
  (v) => {
    if (!Array.isArray(v)) return false;
    for (let i = 0; i < v.length; i++) if (!item(v[i])) return false;
    return true;
  };

/**
 * Plain checks that accept only what the zod schema accepts (a type with no plain check asks its
 * zod schema): the common case costs no copy of the params. Anything they refuse goes through zod,
 * which says what is wrong.
 */
const quick: Record<Exclude<ParamSpec['type'], 'listObject'>, Check> = {
  string: isText,
  integer: isInteger,
  decimal: isDecimal,
  boolean: isBoolean,
  date: isDate,
  dateTime: isDateTime,
  listString: listOf(isText),
  listInteger: listOf(isInteger),
  listDecimal: listOf(isDecimal),
  listBoolean: listOf(isBoolean),
  listDateTime: listOf(isDateTime),
};

/** The plain check of a parameter list (exported for the test that holds it to the zod schema). */
export function quickObject(fields: Record<string, ParamSpec>): Check {
  const checks = Object.entries(fields).map(([name, spec]) => {
    const check = spec.type === 'listObject' ? listOf(quickObject(spec.fields ?? {})) : quick[spec.type];
    return [name, check, spec.required === true] as const;
  });
  const known = new Set(Object.keys(fields));
  return (v) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
    const proto: unknown = Object.getPrototypeOf(v);
    if (proto !== Object.prototype && proto !== null) return false;
    const o = v as Record<string, unknown>;
    for (const key of Object.keys(o)) if (!known.has(key)) return false;
    for (const [name, check, required] of checks) {
      // Own fields only, as zod reads them (paramsSchema): a parameter may be named `valueOf`.
      const value = Object.hasOwn(o, name) ? o[name] : undefined;
      if (value === undefined ? required : !check(value)) return false;
    }
    return true;
  };
}

/**
 * A copy of JSON-like input whose objects have no prototype, so that zod reads only the fields
 * that were sent: an optional parameter named like an Object.prototype member (`valueOf`,
 * `toString`) that is left out is absent, not the inherited function. An array keeps its holes,
 * which zod refuses.
 */
function ownFieldsOnly(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(ownFieldsOnly);
  if (v === null || typeof v !== 'object') return v;
  const out = Object.create(null) as Record<string, unknown>;
  for (const key of Object.keys(v)) out[key] = ownFieldsOnly((v as Record<string, unknown>)[key]);
  return out;
}

/** The zod schema of a parameter list, which has the last word. */
export function paramsSchema(fields: Record<string, ParamSpec>): z.ZodType {
  return z.preprocess(ownFieldsOnly, objectSchema(fields));
}

/** Builds the validator of a job's params once per action version. */
export function compileParamValidator(parameters: Record<string, ParamSpec>): ParamValidator {
  const schema = paramsSchema(parameters);
  const valid = quickObject(parameters);
  return (params) => {
    const input = params ?? {};
    if (valid(input)) return { ok: true, value: input as Record<string, unknown> };
    const parsed = schema.safeParse(input);
    if (parsed.success) return { ok: true, value: parsed.data as Record<string, unknown> };
    const problems = formatIssues(parsed.error, 'params', params ?? {});
    // zod reports unknown keys on the parent; name each one.
    return {
      ok: false,
      problems: problems.flatMap((p) =>
        p.message.startsWith('unknown field(s): ')
          ? p.message
              .slice('unknown field(s): '.length)
              .split(', ')
              .map((k) => ({ path: `${p.path}.${k}`, message: 'not a declared parameter' }))
          : [p],
      ),
    };
  };
}
