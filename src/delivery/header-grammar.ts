/**
 * The HTTP header grammar the relay holds definitions, secrets and rendered requests to, in one
 * place: what a name may be (RFC 9110 token) and what a value may carry (what undici, like Node,
 * sends: tab, visible ASCII and Latin-1; never CR, LF, NUL or another control character).
 */

/** An HTTP header field name: an RFC 9110 token. */
export const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Longest header name a definition may declare. */
export const HEADER_NAME_MAX = 256;
/** A header value as it may leave: tab, visible ASCII and Latin-1. */
export const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/** Whether `name` may be declared as a header name (a token of 1 to HEADER_NAME_MAX characters). */
export function isHeaderName(name: string): boolean {
  return name.length > 0 && name.length <= HEADER_NAME_MAX && HEADER_NAME.test(name);
}

/** Whether `value` may be sent as a header value. */
export function isHeaderValue(value: string): boolean {
  return HEADER_VALUE.test(value);
}
