import type { AuthConfig } from '../actions/action-schema.js';
import type { BuiltRequest } from '../actions/compile-action.js';
import { AuthError } from '../errors/errors.js';
import { MASK, type SecretResolver } from './secret-resolver.js';

/** Names of headers and query parameters that carry credentials, for redaction. */
export interface AuthApplied {
  secretHeaders: string[];
  secretQuery: string[];
}

/**
 * Adds the action's credentials to a built request. With `mask`, secrets are replaced by "***"
 * (preview) and nothing is resolved.
 */
export async function applyAuth(auth: AuthConfig, req: BuiltRequest, secrets: SecretResolver, mask = false): Promise<AuthApplied> {
  const value = async (ref: Parameters<SecretResolver['resolve']>[0]) => (mask ? MASK : secrets.resolve(ref));
  switch (auth.type) {
    case 'none':
      return { secretHeaders: [], secretQuery: [] };
    case 'apiKey': {
      const key = await value(auth.value);
      if (auth.in === 'header') {
        req.headers[auth.name.toLowerCase()] = key;
        return { secretHeaders: [auth.name.toLowerCase()], secretQuery: [] };
      }
      const sep = req.path.includes('?') ? '&' : '?';
      req.path += `${sep}${encodeURIComponent(auth.name)}=${mask ? MASK : encodeURIComponent(key)}`;
      return { secretHeaders: [], secretQuery: [auth.name] };
    }
    case 'basic': {
      const password = await value(auth.password);
      req.headers.authorization = mask ? `Basic ${MASK}` : `Basic ${Buffer.from(`${auth.username}:${password}`).toString('base64')}`;
      return { secretHeaders: ['authorization'], secretQuery: [] };
    }
    case 'bearer':
      req.headers.authorization = `Bearer ${await value(auth.token)}`;
      return { secretHeaders: ['authorization'], secretQuery: [] };
    case 'oauth2ClientCredentials':
    case 'customToken':
      if (mask) {
        req.headers.authorization = `Bearer ${MASK}`;
        return { secretHeaders: ['authorization'], secretQuery: [] };
      }
      throw new AuthError(`auth type ${auth.type} is accepted by the schema but not delivered by this version yet`);
  }
}

/** Copies headers with credential-bearing values masked, for records and answers. */
export function maskHeaders(headers: Record<string, string>, applied: AuthApplied): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) {
    out[k] = applied.secretHeaders.includes(k) || k === 'authorization' ? MASK : v;
  }
  return out;
}

/** Masks credential query parameters in a path. */
export function maskPath(path: string, applied: AuthApplied): string {
  if (applied.secretQuery.length === 0) return path;
  const i = path.indexOf('?');
  if (i < 0) return path;
  const search = new URLSearchParams(path.slice(i + 1));
  for (const name of applied.secretQuery) if (search.has(name)) search.set(name, MASK);
  return `${path.slice(0, i)}?${search.toString()}`;
}
