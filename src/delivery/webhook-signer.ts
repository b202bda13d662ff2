import { createHmac } from 'node:crypto';
import { AuthError } from '../errors/errors.js';

/** Header names of the Standard Webhooks scheme (https://www.standardwebhooks.com). */
export const WEBHOOK_HEADERS = ['webhook-id', 'webhook-timestamp', 'webhook-signature'] as const;

/**
 * A signing secret as the Standard Webhooks libraries take it: `whsec_` then base64 of the key
 * (the prefix is optional, as in those libraries).
 */
export function decodeSigningSecret(value: string, field: string): Buffer {
  const b64 = value.startsWith('whsec_') ? value.slice('whsec_'.length) : value;
  const key = /^[A-Za-z0-9+/]+={0,2}$/.test(b64) ? Buffer.from(b64, 'base64') : Buffer.alloc(0);
  if (key.length < 16) throw new AuthError(`${field}: not a signing secret ("whsec_" then base64 of at least 16 bytes)`);
  return key;
}

/** `v1,<base64 HMAC-SHA256 of id.timestamp.body>` for one key. */
export function signatureFor(key: Buffer, id: string, timestampSec: number, body: string): string {
  return `v1,${createHmac('sha256', key).update(`${id}.${timestampSec}.${body}`).digest('base64')}`;
}

/** The three headers of a signed request; one signature per key (two during a rotation), space-separated. */
export function signatureHeaders(keys: Buffer[], id: string, timestampSec: number, body: string): Record<string, string> {
  return {
    'webhook-id': id,
    'webhook-timestamp': String(timestampSec),
    'webhook-signature': keys.map((k) => signatureFor(k, id, timestampSec, body)).join(' '),
  };
}
