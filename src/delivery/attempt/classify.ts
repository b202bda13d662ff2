import type { CompiledAction } from '../../actions/compile-action.js';
import { HttpStatusError, ResponseInvalidError } from '../../errors/errors.js';
import type { SentResponse } from '../http-sender.js';
import { RETRY_AFTER_STATUSES, isRetryableStatus, parseRetryAfter } from '../retry-policy.js';

/**
 * Step 5: what the answer means. A 2xx gives the captured response fields (empty when the action
 * captures none); any other status, or a 2xx whose body does not hold the declared fields,
 * throws the error that carries its own retry decision.
 */
export function classify(action: CompiledAction, res: SentResponse, now: number, maxResponseBytes: number): Record<string, unknown> {
  const status = res.status;
  if (status < 200 || status >= 300) {
    const retryAfter = RETRY_AFTER_STATUSES.has(status) ? parseRetryAfter(res.headers['retry-after'], now) : undefined;
    throw new HttpStatusError(status, isRetryableStatus(status, action.definition.retry.retryOn), retryAfter);
  }
  if (!action.capturesResponse) return {};
  if (res.truncated) throw new ResponseInvalidError(`response body exceeds ${maxResponseBytes} bytes`, status);
  let body: unknown;
  try {
    body = JSON.parse(bodyText(res.body));
  } catch {
    throw new ResponseInvalidError('response body is not valid JSON', status);
  }
  return action.captureResponse(body, status);
}

/** The body as UTF-8 text, without the byte order mark some servers put before JSON. */
function bodyText(body: Buffer): string {
  const text = body.toString('utf8');
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

/**
 * The action's errorResponse fields of a non-2xx JSON answer, for the journey's error branch.
 * Never an error: a 2xx, a body cut short or not JSON give none.
 */
export function captureErrorResponse(action: CompiledAction | null, res: SentResponse | undefined): Record<string, unknown> {
  if (!action?.capturesErrorResponse || !res || (res.status >= 200 && res.status < 300) || res.truncated) return {};
  let body: unknown;
  try {
    body = JSON.parse(bodyText(res.body));
  } catch {
    return {};
  }
  return action.captureErrorResponse(body);
}

/**
 * Captured fields as they may be kept (results stream, job status, dead-letter record): every
 * string, number, boolean and key in them with the secrets the process has seen masked, since a
 * third party may echo a credential back ("invalid API key: ...", or a numeric key as a number).
 * A masked number or boolean becomes the masked text. The same object when nothing was masked.
 * `redact` masks whole secrets only: a parsed value was never cut short, so a value that merely
 * ends with a secret's first characters is kept as it is.
 */
export function redactCaptured(fields: Record<string, unknown>, redact: (s: string) => string): Record<string, unknown> {
  let out: Record<string, unknown> | undefined;
  for (const key in fields) {
    const value = fields[key];
    const masked = redactValue(value, redact);
    const maskedKey = redact(key);
    if (maskedKey !== key) {
      out ??= { ...fields };
      delete out[key];
      out[maskedKey] = masked;
    } else if (masked !== value) (out ??= { ...fields })[key] = masked;
  }
  return out ?? fields;
}

function redactValue(value: unknown, redact: (s: string) => string): unknown {
  if (typeof value === 'string') return redact(value);
  if (typeof value === 'number' || typeof value === 'boolean') {
    const text = String(value);
    const masked = redact(text);
    return masked === text ? value : masked;
  }
  if (Array.isArray(value)) {
    let out: unknown[] | undefined;
    value.forEach((item, i) => {
      const masked = redactValue(item, redact);
      if (masked !== item) (out ??= [...value])[i] = masked;
    });
    return out ?? value;
  }
  if (value !== null && typeof value === 'object') return redactCaptured(value as Record<string, unknown>, redact);
  return value;
}
