import { describe, expect, it } from 'vitest';
import { compileAction, parseActionDefinition } from '../../src/actions/compile-action.js';
import { ResponseInvalidError, ValidationError } from '../../src/errors/errors.js';
import { jobInputSchema, MAX_ORDERING_KEY_BYTES } from '../../src/queue/job-schema.js';

const compile = (extra: Record<string, unknown>) =>
  compileAction(parseActionDefinition({ id: 'e', name: 'e', endpoint: { url: 'https://api.example.test', method: 'POST' }, ...extra }), {
    version: 1,
    userAgent: 'ua',
  });

const fields = { code: { type: 'string' }, detail: { type: 'string', path: 'error.detail' }, retryIn: { type: 'integer' } };

describe('errorResponse', () => {
  it('captures the declared fields of a failure body, typed like response.fields', () => {
    const action = compile({ errorResponse: { fields } });
    expect(action.capturesErrorResponse).toBe(true);
    expect(action.capturesResponse).toBe(false);
    expect(action.captureErrorResponse({ code: 'E422', error: { detail: 'invalid phone' }, retryIn: 30, other: 1 })).toEqual({
      code: 'E422',
      detail: 'invalid phone',
      retryIn: 30,
    });
  });

  it('leaves out a missing or mistyped field instead of failing', () => {
    const action = compile({ errorResponse: { fields } });
    expect(action.captureErrorResponse({ code: 42, error: 'flat', retryIn: 1.5 })).toEqual({});
    expect(action.captureErrorResponse({ code: 'E1', error: { detail: ['a'] } })).toEqual({ code: 'E1' });
    expect(action.captureErrorResponse('not an object')).toEqual({});
    expect(action.captureErrorResponse(null)).toEqual({});
  });

  it('response.fields keep failing the attempt on a mistyped field: one capture, two policies', () => {
    const action = compile({ response: { fields }, errorResponse: { fields } });
    expect(() => action.captureResponse({ code: 42 }, 200)).toThrow(ResponseInvalidError);
    expect(action.captureErrorResponse({ code: 42 })).toEqual({});
  });

  it('an action without it captures nothing', () => {
    const action = compile({});
    expect(action.capturesErrorResponse).toBe(false);
    expect(action.captureErrorResponse({ code: 'E1' })).toEqual({});
  });

  it('refuses unknown keys, unknown types and prototype names, naming the field', () => {
    const problems = (def: Record<string, unknown>) => {
      try {
        compile(def);
      } catch (err) {
        if (err instanceof ValidationError) return err.problems.map((p) => p.path);
      }
      return [];
    };
    expect(problems({ errorResponse: { fields: { code: { type: 'text' } } } })).toEqual(['errorResponse.fields.code.type']);
    expect(problems({ errorResponse: { fields: {}, extra: 1 } })).toEqual(['errorResponse']);
    expect(problems({ errorResponse: JSON.parse('{"fields": {"__proto__": {"type": "string"}}}') })).toContain(
      'errorResponse.fields.__proto__',
    );
  });
});

describe('orderingKey in the job input', () => {
  const input = (orderingKey: unknown) => jobInputSchema.safeParse({ actionId: 'a', orderingKey });

  it('takes a key of up to 256 bytes of UTF-8', () => {
    expect(input('profile-42').success).toBe(true);
    expect(input('p'.repeat(MAX_ORDERING_KEY_BYTES)).success).toBe(true);
    // 128 two-byte characters are 256 bytes; one more is over.
    expect(input('é'.repeat(128)).success).toBe(true);
    expect(input('é'.repeat(129)).success).toBe(false);
  });

  it('refuses an empty, too long or non-string key, naming the field', () => {
    for (const bad of ['', 'p'.repeat(MAX_ORDERING_KEY_BYTES + 1), 42, null]) {
      const r = input(bad);
      expect(r.success).toBe(false);
      expect(r.error?.issues[0]?.path).toEqual(['orderingKey']);
    }
  });
});
