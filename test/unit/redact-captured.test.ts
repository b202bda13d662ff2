import { describe, expect, it } from 'vitest';
import { redactCaptured } from '../../src/delivery/attempt/classify.js';

const redact = (s: string) => s.replaceAll('s3cret-key', '***').replaceAll('90210777', '***');

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

  it('masks a secret echoed as a number or as an object key', () => {
    const captured = { echoed: 90210777, deep: { list: [1, 90210777] }, keys: { 's3cret-key': 'valid' } };
    expect(redactCaptured(captured, redact)).toEqual({ echoed: '***', deep: { list: [1, '***'] }, keys: { '***': 'valid' } });
    expect(captured.echoed).toBe(90210777);
    expect(captured.keys).toEqual({ 's3cret-key': 'valid' });
  });
});
