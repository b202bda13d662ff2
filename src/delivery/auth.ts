import type { AuthConfig, SecretRef } from '../actions/action-schema.js';
import type { BuiltRequest } from '../actions/compile-action.js';
import { AuthError } from '../errors/errors.js';
import { isHeaderValue } from './header-grammar.js';
import { MASK, type SecretResolver } from './secret-resolver.js';
import type { TokenProvider } from './token-provider.js';

/** Names of headers and query parameters that carry credentials, for redaction. */
export interface AuthApplied {
  secretHeaders: string[];
  secretQuery: string[];
  /** The access token sent, for token auth types: a 401 asks for a newer one than this. */
  token?: string;
}

export interface ApplyAuthOptions {
  secrets: SecretResolver;
  /** Obtains access tokens; needed for oauth2ClientCredentials and customToken unless `mask`. */
  tokens?: TokenProvider;
  /** The action, for the token metric and messages. */
  actionId: string;
  /** Replace secrets by "***" and resolve nothing (preview). */
  mask?: boolean;
  /** A token the endpoint refused with 401: obtain a newer one. */
  rejectedToken?: string;
}

/** A secret headed for a header: one with a line break or the like is a broken secret, not a network fault. */
function headerSafe(value: string, field: string): string {
  if (!isHeaderValue(value)) throw new AuthError(`${field}: the secret's value holds characters a header cannot carry`);
  return value;
}

function addQuery(req: BuiltRequest, name: string, value: string, secrets: SecretResolver): void {
  const sep = req.path.includes('?') ? '&' : '?';
  const encoded = encodeURIComponent(value);
  // A third party that echoes the URL back echoes the encoded form, or re-encodes it as a form
  // (space as +, ~ ( ) ! ' * escaped, as URLSearchParams writes it): mask those too.
  if (value !== MASK) {
    secrets.remember(encoded);
    secrets.remember(new URLSearchParams({ v: value }).toString().slice(2));
  }
  req.path += `${sep}${encodeURIComponent(name)}=${encoded}`;
}

/**
 * Adds the action's credentials to a built request. With `mask`, secrets are replaced by "***"
 * (preview) and nothing is resolved or fetched.
 */
export async function applyAuth(auth: AuthConfig, req: BuiltRequest, opts: ApplyAuthOptions): Promise<AuthApplied> {
  const mask = opts.mask ?? false;
  const value = async (ref: SecretRef, field: string) => (mask ? MASK : opts.secrets.resolve(ref, field));
  switch (auth.type) {
    case 'none':
      return { secretHeaders: [], secretQuery: [] };
    case 'apiKey': {
      const key = await value(auth.value, 'auth.value');
      if (auth.in === 'header') {
        req.headers[auth.name.toLowerCase()] = headerSafe(key, 'auth.value');
        return { secretHeaders: [auth.name.toLowerCase()], secretQuery: [] };
      }
      addQuery(req, auth.name, key, opts.secrets);
      return { secretHeaders: [], secretQuery: [auth.name] };
    }
    case 'basic': {
      const password = await value(auth.password, 'auth.password');
      if (mask) {
        req.headers.authorization = `Basic ${MASK}`;
      } else {
        // The encoded pair is as secret as the password, and is what an echoing server sends back.
        const credentials = Buffer.from(`${auth.username}:${password}`).toString('base64');
        opts.secrets.remember(credentials);
        req.headers.authorization = `Basic ${credentials}`;
      }
      return { secretHeaders: ['authorization'], secretQuery: [] };
    }
    case 'bearer':
      req.headers.authorization = `Bearer ${headerSafe(await value(auth.token, 'auth.token'), 'auth.token')}`;
      return { secretHeaders: ['authorization'], secretQuery: [] };
    case 'oauth2ClientCredentials':
    case 'customToken': {
      let token = MASK;
      if (!mask) {
        if (!opts.tokens) throw new AuthError(`auth type ${auth.type} needs a token provider`);
        token = await opts.tokens.get(auth, opts.actionId, opts.rejectedToken);
      }
      const inject = auth.type === 'customToken' ? auth.inject : { as: 'bearer' as const, name: undefined };
      const applied: AuthApplied = { secretHeaders: [], secretQuery: [], ...(mask ? {} : { token }) };
      if (inject.as === 'query') {
        const name = inject.name ?? 'access_token';
        addQuery(req, name, token, opts.secrets);
        applied.secretQuery.push(name);
      } else if (inject.as === 'header') {
        const name = (inject.name ?? 'authorization').toLowerCase();
        req.headers[name] = headerSafe(token, 'access token');
        applied.secretHeaders.push(name);
      } else {
        req.headers.authorization = `Bearer ${headerSafe(token, 'access token')}`;
        applied.secretHeaders.push('authorization');
      }
      return applied;
    }
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
