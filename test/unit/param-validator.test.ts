import { describe, expect, it } from 'vitest';
import type { ParamSpec } from '../../src/actions/action-schema.js';
import { compileParamValidator } from '../../src/actions/param-validator.js';

/* What a job's params are refused for, each problem written out: path and message. */

const one = (spec: ParamSpec) => compileParamValidator({ v: spec });
const problems = (spec: ParamSpec, value: unknown) => {
  const r = one(spec)({ v: value });
  return r.ok ? [] : r.problems;
};
const at = (message: string, path = 'params.v') => [{ path, message }];

describe('messages per type', () => {
  it.each<[ParamSpec['type'], unknown, string]>([
    ['string', 3, 'expected a string'],
    ['string', 'half \uD800 pair', 'holds a lone UTF-16 surrogate'],
    ['string', 'half \uDC00 pair', 'holds a lone UTF-16 surrogate'],
    ['integer', 4.5, 'expected an integer'],
    ['integer', '4', 'expected an integer'],
    ['decimal', '1.5', 'expected a number'],
    ['boolean', 1, 'expected a boolean'],
    ['date', '2026-02-30', 'expected a date YYYY-MM-DD'],
    ['date', '2026-13-01', 'expected a date YYYY-MM-DD'],
    ['date', '2026-1-01', 'expected a date YYYY-MM-DD'],
    ['date', ' 2026-01-01', 'expected a date YYYY-MM-DD'],
    ['date', '2027-02-29', 'expected a date YYYY-MM-DD'],
    // A form Date itself reads (an expanded year), and only the pattern refuses.
    ['date', '+002026-01-01', 'expected a date YYYY-MM-DD'],
    // Our words, not the schema library's, for a wrong type or a negative epoch.
    ['date', 20260101, 'expected a date YYYY-MM-DD'],
    ['dateTime', -1, 'expected epoch milliseconds: a whole number, 0 or more'],
    ['dateTime', 1.5, 'expected an ISO-8601 date-time with offset or epoch milliseconds'],
    ['dateTime', '+002026-11-28T10:00:00Z', 'expected ISO-8601 with offset'],
    ['dateTime', false, 'expected an ISO-8601 date-time with offset or epoch milliseconds'],
    ['dateTime', '2026-11-28T10:00:00', 'expected ISO-8601 with offset'],
    ['dateTime', '2026-11-28 10:00:00Z', 'expected ISO-8601 with offset'],
    ['dateTime', '2026-11-28T10:00:00.1234567890Z', 'expected ISO-8601 with offset'],
    ['dateTime', '2026-11-28T25:00:00Z', 'expected ISO-8601 with offset'],
    ['dateTime', '2026-11-28T10:00:00+0100', 'expected ISO-8601 with offset'],
    ['dateTime', 'x2026-11-28T10:00:00Z', 'expected ISO-8601 with offset'],
    ['listString', 'a', 'expected a list of strings'],
    ['listInteger', 'a', 'expected a list of integers'],
    ['listDecimal', 'a', 'expected a list of numbers'],
    ['listBoolean', 'a', 'expected a list of booleans'],
    ['listDateTime', 'a', 'expected a list of date-times'],
    ['listObject', 'a', 'expected a list of objects'],
  ])('%s refuses %j: %s', (type, value, message) => {
    expect(problems({ type }, value)).toEqual(at(message));
  });

  it('an integer beyond 2^53 is out of range', () => {
    expect(problems({ type: 'integer' }, 2 ** 53)).toContainEqual({ path: 'params.v', message: 'integer out of range' });
    expect(problems({ type: 'integer' }, 2 ** 53 - 1)).toEqual([]);
    expect(problems({ type: 'integer' }, -(2 ** 53) + 1)).toEqual([]);
  });

  it.each<[ParamSpec['type'], unknown]>([
    ['date', '2028-02-29'],
    ['date', '2026-12-31'],
    ['dateTime', '2026-11-28T10:00Z'],
    ['dateTime', '2026-11-28T10:00:59.123456789+05:30'],
    ['dateTime', '2026-11-28T10:00:00-08:00'],
    ['dateTime', 0],
    ['decimal', -0.25],
    ['integer', -7],
    ['listDateTime', ['2026-11-28T10:00:00Z', 0]],
    ['listDecimal', []],
  ])('%s accepts %j as it is', (type, value) => {
    expect(one({ type })({ v: value })).toEqual({ ok: true, value: { v: value } });
  });

  it('an item of a list is named by its index', () => {
    expect(problems({ type: 'listInteger' }, [1, 2, 'x'])).toEqual(at('expected an integer', 'params.v[2]'));
    expect(problems({ type: 'listBoolean' }, [true, 1])).toEqual(at('expected a boolean', 'params.v[1]'));
    expect(problems({ type: 'listString' }, ['ok', 5])).toEqual(at('expected a string', 'params.v[1]'));
    expect(problems({ type: 'listDecimal' }, ['1'])).toEqual(at('expected a number', 'params.v[0]'));
    expect(problems({ type: 'listDateTime' }, ['2026-11-28T10:00:00Z', '2026-11-28'])).toEqual(
      at('expected ISO-8601 with offset', 'params.v[1]'),
    );
  });
});

describe('objects and required values', () => {
  const items: ParamSpec = { type: 'listObject', fields: { sku: { type: 'string', required: true }, qty: { type: 'integer' } } };

  it('a list of objects: an item that is not an object, a required field left out, fields not declared, each named', () => {
    expect(problems(items, [3, { qty: 1 }, { sku: 'A', extra: 1, more: 2 }, { sku: 'B' }])).toEqual([
      { path: 'params.v[0]', message: 'expected an object' },
      { path: 'params.v[1].sku', message: 'required' },
      { path: 'params.v[2].extra', message: 'not a declared parameter' },
      { path: 'params.v[2].more', message: 'not a declared parameter' },
    ]);
    expect(problems(items, [{ sku: 'A', qty: 'two' }])).toEqual(at('expected an integer', 'params.v[0].qty'));
    expect(problems({ type: 'listObject' }, [{}])).toEqual([]);
    expect(problems({ type: 'listObject' }, [{ any: 1 }])).toEqual(at('not a declared parameter', 'params.v[0].any'));
  });

  it('valid params are used as given (no copy); what the plain checks refuse, the schema decides', () => {
    const input = { v: 'y' };
    const same = one({ type: 'string' })(input);
    expect(same.ok && same.value).toBe(input);
    // Not numbers a JSON body can carry: refused by the plain check and by the schema alike.
    expect(problems({ type: 'decimal' }, Infinity)).toEqual(at('expected a number'));
    expect(problems({ type: 'decimal' }, NaN)).toEqual(at('expected a number'));
    expect(problems({ type: 'listDecimal' }, [1, -Infinity])).toEqual(at('expected a number', 'params.v[1]'));
    expect(problems(items, [null])).toEqual(at('expected an object', 'params.v[0]'));
    // An object of another prototype goes through the schema, which reads it into plain data.
    class Instance {
      v = 'x';
    }
    const read = one({ type: 'string' })(new Instance());
    expect(read).toEqual({ ok: true, value: { v: 'x' } });
    expect(read.ok && read.value).not.toBeInstanceOf(Instance);
  });

  it('a hole in a list (a sparse array) is an item of the wrong type, not a skipped one', () => {
    // eslint-disable-next-line no-sparse-arrays
    expect(one(items)({ v: [{ sku: 'A' }, , { sku: 'B' }] }).ok).toBe(false);
    // eslint-disable-next-line no-sparse-arrays
    expect(one({ type: 'listString' })({ v: ['a', , 'b'] }).ok).toBe(false);
    expect(one({ type: 'listString' })({ v: ['a', 'b'] }).ok).toBe(true);
  });

  it('a required parameter left out is "required", whatever its type; an optional one may be left out', () => {
    const validate = compileParamValidator({
      s: { type: 'string', required: true },
      t: { type: 'dateTime', required: true },
      l: { type: 'listObject', required: true, fields: {} },
      o: { type: 'integer' },
    });
    const r = validate({});
    expect(r.ok ? [] : r.problems).toEqual([
      { path: 'params.s', message: 'required' },
      { path: 'params.t', message: 'required' },
      { path: 'params.l', message: 'required' },
    ]);
    expect(validate({ s: 'x', t: 0, l: [] })).toEqual({ ok: true, value: { s: 'x', t: 0, l: [] } });
  });

  it('parameters named like Object.prototype members are read from the params only: left out, they are absent', () => {
    // Built from entries: in an object literal, TypeScript types these names as Object's members.
    const specs = Object.fromEntries<ParamSpec>([
      ['valueOf', { type: 'string' }],
      ['toString', { type: 'integer', required: true }],
      [
        'items',
        {
          type: 'listObject',
          fields: Object.fromEntries<ParamSpec>([
            ['hasOwnProperty', { type: 'boolean' }],
            ['sku', { type: 'string', required: true }],
          ]),
        },
      ],
    ]);
    const validate = compileParamValidator(specs);
    expect(validate({ toString: 1 })).toEqual({ ok: true, value: { toString: 1 } });
    expect(validate({ toString: 1, items: [{ sku: 'A' }] }).ok).toBe(true);
    expect(validate({ toString: 1, valueOf: 'v', items: [{ sku: 'A', hasOwnProperty: true }] }).ok).toBe(true);
    const r = validate({ valueOf: 3, items: [{ hasOwnProperty: 'yes' }] });
    expect(r.ok ? [] : r.problems).toEqual([
      { path: 'params.valueOf', message: 'expected a string' },
      { path: 'params.toString', message: 'required' },
      { path: 'params.items[0].hasOwnProperty', message: 'expected a boolean' },
      { path: 'params.items[0].sku', message: 'required' },
    ]);
    // Refused for another field, the ones left out are still not named (zod has the last word here).
    const other = validate({ toString: 'x', items: [{ sku: 'A' }, { sku: 1 }] });
    expect(other.ok ? [] : other.problems).toEqual([
      { path: 'params.toString', message: 'expected an integer' },
      { path: 'params.items[1].sku', message: 'expected a string' },
    ]);
  });

  it('a value of the wrong type is not called "required", even null', () => {
    expect(problems({ type: 'string', required: true }, null)).toEqual(at('expected a string'));
    expect(problems({ type: 'dateTime', required: true }, false)).not.toContainEqual({ path: 'params.v', message: 'required' });
  });

  it('params not declared are named one by one; absent params are no params; a non-object is refused at "params"', () => {
    const validate = compileParamValidator({ v: { type: 'string' } });
    const r = validate({ x: 1, y: 2 });
    expect(r.ok ? [] : r.problems).toEqual([
      { path: 'params.x', message: 'not a declared parameter' },
      { path: 'params.y', message: 'not a declared parameter' },
    ]);
    expect(validate(undefined)).toEqual({ ok: true, value: {} });
    expect(validate(null)).toEqual({ ok: true, value: {} });
    const s = validate('text');
    expect(s.ok ? [] : s.problems).toEqual([{ path: 'params', message: 'expected an object' }]);
    const list = validate([1]);
    expect(list.ok ? [] : list.problems).toEqual([{ path: 'params', message: 'expected an object' }]);
  });
});
