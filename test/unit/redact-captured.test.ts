import { describe, expect, it } from 'vitest';
import { redactCaptured } from '../../src/delivery/attempt/classify.js';

const redact = (s: string) => s.replaceAll('s3cret-key', '***');

describe('captured fields with secrets masked', () => {
  it('masks every string, however deep, and leaves the other values as they are', () => {
    const captured = {
      message: 'invalid API key: s3cret-key',
      detail: { echoed: ['ok', 's3cret-key'], count: 2, nested: { at: null, flag: true } },
      code: 401,
    };
    expect(redactCaptured(captured, redact)).toEqual({
      message: 'invalid API key: ***',
      detail: { echoed: ['ok', '***'], count: 2, nested: { at: null, flag: true } },
      code: 401,
    });
    expect(captured.message).toBe('invalid API key: s3cret-key'); // the input is not changed
  });

  it('hands back the same object when there is nothing to mask', () => {
    const captured = { id: 'msg-1', parts: ['a', { b: 'c' }] };
    expect(redactCaptured(captured, redact)).toBe(captured);
    expect(redactCaptured({}, redact)).toEqual({});
  });
});
