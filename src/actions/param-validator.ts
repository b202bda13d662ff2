import { z } from 'zod';
import type { ParamSpec } from './action-schema.js';
import type { FieldProblem } from '../errors/errors.js';
import { hasLoneSurrogate } from './template.js';

const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;
const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/;

const date = z.string({ error: 'expected a date YYYY-MM-DD' }).refine((s) => {
  const m = DATE.exec(s);
  if (!m) return false;
  const d = new Date(`${s}T00:00:00Z`);
  return !Number.isNaN(d.getTime()) && d.getUTCDate() === Number(m[3]);
}, 'expected a date YYYY-MM-DD');

const EPOCH_MS = 'expected epoch milliseconds: a whole number, 0 or more';
const dateTime = z.union(
  [
    z.string().refine((s) => DATE_TIME.test(s) && !Number.isNaN(Date.parse(s)), 'expected ISO-8601 with offset'),
    z.number().int(EPOCH_MS).nonnegative(EPOCH_MS),
  ],
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

/** Builds the validator of a job's params once per action version. */
export function compileParamValidator(parameters: Record<string, ParamSpec>): ParamValidator {
  const schema = objectSchema(parameters);
  return (params) => {
    const parsed = schema.safeParse(params ?? {});
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
