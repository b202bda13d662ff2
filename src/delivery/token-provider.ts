import { createHash, randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { isSecretRef, type AuthConfig } from '../actions/action-schema.js';
import type { BuiltRequest } from '../actions/compile-action.js';
import { AuthError, RelayError, coerceError } from '../errors/errors.js';
import type { RedisClient, RelayKeys } from '../redis/redis-connection.js';
import { isHeaderValue } from './header-grammar.js';
import type { HttpSender } from './http-sender.js';
import { isRetryableTokenStatus } from './retry-policy.js';
import type { SecretResolver } from './secret-resolver.js';
import { luaScript } from '../redis/lua-script.js';

export type TokenAuth = Extract<AuthConfig, { type: 'oauth2ClientCredentials' | 'customToken' }>;

/** Lifetime of a token whose answer gives none (no expires_in, no expiresInPath, no cacheTtlMs). */
export const DEFAULT_TOKEN_TTL_MS = 300_000;
/**
 * The longest a token is kept before it is fetched again, whatever lifetime its endpoint gives:
 * some answer a "never expires" expires_in (2^63 - 1), which no cache entry can hold.
 */
export const MAX_TOKEN_LIFETIME_MS = 86_400_000;
/** Longest a token request may take. */
export const TOKEN_TIMEOUT_MS = 10_000;
/** Bytes of a token answer read. */
const TOKEN_BODY_BYTES = 64 * 1024;
/** How long a refused token request (4xx, no token in the answer) is answered from memory. */
export const REFUSAL_HOLD_MS = 5000;
/** How often a caller waiting for another worker's fetch looks again. */
const WAIT_POLL_MS = 25;

export interface TokenProvider {
  /**
   * The current token for these auth settings: from this process, else from Redis, else fetched by
   * one caller across all workers while the others wait. `rejected` is a token the endpoint just
   * answered 401 to: it is not returned again, a fresh one is fetched unless another caller already did.
   */
  get(auth: TokenAuth, actionId: string, rejected?: string): Promise<string>;
}

export interface TokenProviderDeps {
  redis: RedisClient;
  keys: RelayKeys;
  /** Sends token requests; the egress guard applies to it as to deliveries. */
  sender: HttpSender;
  secrets: SecretResolver;
  logger: Logger;
  userAgent: string;
  /** Deadline of one token request, connect to last byte. @defaultValue TOKEN_TIMEOUT_MS */
  timeoutMs?: number;
  /** Called once per token request sent, for the token metric. */
  onFetch?: (actionId: string, ok: boolean) => void;
  now?: () => number;
}

interface CachedToken {
  token: string;
  /** When callers stop using it and fetch the next one: a safety margin before expiry. */
  renewAt: number;
}

/** Identity of a token: everything that obtains it (secret references, not their values). */
export function tokenId(auth: TokenAuth): string {
  return createHash('sha256').update(JSON.stringify(auth)).digest('hex').slice(0, 32);
}

/** Renew at most a minute, and at least a tenth of the lifetime, before the token expires. */
export function renewAt(fetchedAt: number, lifetimeMs: number): number {
  return fetchedAt + lifetimeMs - Math.min(60_000, Math.ceil(lifetimeMs / 10));
}

function readPath(value: unknown, path: string): unknown {
  let cur = value;
  for (const part of path.split('.')) {
    if (cur === null || typeof cur !== 'object' || !Object.prototype.hasOwnProperty.call(cur, part)) return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

// Deletes the lock only if this caller still holds it. KEYS[1] lock; ARGV[1] owner. Returns 1 when deleted.
const RELEASE = luaScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`);

/** The token every worker shares, from Redis; undefined when none (or a garbled one) is there. */
async function readShared(deps: TokenProviderDeps, id: string): Promise<CachedToken | undefined> {
  const raw = await deps.redis.get(deps.keys.token(id));
  if (!raw) return undefined;
  try {
    const parsed = JSON.parse(raw) as CachedToken;
    if (typeof parsed.token === 'string' && typeof parsed.renewAt === 'number') return parsed;
  } catch {
    // A garbled entry is refetched.
  }
  return undefined;
}

/** A customToken request body with each secret reference replaced by its value. */
async function resolveBody(deps: TokenProviderDeps, value: unknown, path: string): Promise<unknown> {
  if (isSecretRef(value)) return deps.secrets.resolve(value, path);
  if (Array.isArray(value)) return Promise.all(value.map((v, i) => resolveBody(deps, v, `${path}[${i}]`)));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
    for (const [k, v] of Object.entries(value)) out[k] = await resolveBody(deps, v, `${path}.${k}`);
    return out;
  }
  return value;
}

/** The token request of an auth setting, its secrets resolved. */
async function buildTokenRequest(deps: TokenProviderDeps, auth: TokenAuth): Promise<BuiltRequest> {
  const headers: Record<string, string> = { accept: 'application/json', 'user-agent': deps.userAgent };
  if (auth.type === 'oauth2ClientCredentials') {
    const url = new URL(auth.tokenUrl);
    const secret = await deps.secrets.resolve(auth.clientSecret, 'auth.clientSecret');
    const form = new URLSearchParams({ grant_type: 'client_credentials' });
    if (auth.scope) form.set('scope', auth.scope);
    if (auth.audience) form.set('audience', auth.audience);
    if (auth.clientAuth === 'body') {
      form.set('client_id', auth.clientId);
      form.set('client_secret', secret);
    } else {
      // RFC 6749 2.3.1: each part form-encoded before base64.
      const pair = `${encodeURIComponent(auth.clientId)}:${encodeURIComponent(secret)}`;
      headers.authorization = `Basic ${Buffer.from(pair).toString('base64')}`;
    }
    headers['content-type'] = 'application/x-www-form-urlencoded';
    return { method: 'POST', origin: url.origin, path: url.pathname + url.search, headers, body: form.toString() };
  }
  const r = auth.request;
  const url = new URL(r.url);
  for (const [name, v] of Object.entries(r.headers ?? {})) {
    const value = typeof v === 'string' ? v : await deps.secrets.resolve(v, `auth.request.headers.${name}`);
    // As the delivery path holds its own headers (auth.ts): a value undici would refuse to send is the
    // definition's fault, not the token endpoint's, so it is not retried as an endpoint that did not answer.
    if (!isHeaderValue(value)) {
      throw new AuthError(`auth.request.headers.${name}: the secret's value holds characters a header cannot carry`);
    }
    headers[name.toLowerCase()] = value;
  }
  let body: string | undefined;
  if (r.body !== undefined && r.method === 'POST') {
    const resolved = await resolveBody(deps, r.body, 'auth.request.body');
    if (r.bodyType === 'form') {
      const form = new URLSearchParams();
      for (const [k, v] of Object.entries(resolved as Record<string, unknown>)) if (v !== null) form.set(k, String(v));
      body = form.toString();
      headers['content-type'] = 'application/x-www-form-urlencoded';
    } else {
      body = JSON.stringify(resolved);
      headers['content-type'] = 'application/json';
    }
  }
  return { method: r.method, origin: url.origin, path: url.pathname + url.search, headers, body };
}

/** The token and its lifetime (when the answer gives one) in a token endpoint's answer. */
function readTokenAnswer(auth: TokenAuth, text: string): { token: unknown; lifetimeMs: number | undefined } {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    doc = undefined;
  }
  const lifetime = (path: string) => {
    const expiresIn = Number(readPath(doc, path));
    return Number.isFinite(expiresIn) && expiresIn > 0 ? Math.min(expiresIn * 1000, MAX_TOKEN_LIFETIME_MS) : undefined;
  };
  if (auth.type === 'oauth2ClientCredentials') return { token: readPath(doc, 'access_token'), lifetimeMs: lifetime('expires_in') };
  const token = auth.tokenPath === '$response' ? (typeof doc === 'string' ? doc : text.trim()) : readPath(doc, auth.tokenPath);
  return { token, lifetimeMs: (auth.expiresInPath ? lifetime(auth.expiresInPath) : undefined) ?? auth.cacheTtlMs };
}

/** Sends the token request and reads the token and its lifetime out of the answer. */
async function fetchToken(deps: TokenProviderDeps, auth: TokenAuth, actionId: string): Promise<CachedToken> {
  const now = deps.now ?? Date.now;
  const req = await buildTokenRequest(deps, auth);
  const where = `token endpoint ${req.origin}${req.path.split('?')[0] ?? ''}`;
  const fetchedAt = now();
  let ok = false;
  try {
    let res;
    try {
      res = await deps.sender.send(req, { timeoutMs: deps.timeoutMs ?? TOKEN_TIMEOUT_MS, readLimit: TOKEN_BODY_BYTES });
    } catch (err: unknown) {
      if (err instanceof RelayError && !err.retryable) throw err;
      throw new AuthError(`${where} did not answer: ${deps.secrets.redact(coerceError(err).message)}`, true);
    }
    if (res.status < 200 || res.status >= 300) {
      throw new AuthError(`${where} answered HTTP ${res.status}`, isRetryableTokenStatus(res.status));
    }
    const { token, lifetimeMs } = readTokenAnswer(auth, res.body.toString('utf8'));
    if (typeof token !== 'string' || token.length === 0 || token.length > 16_384 || /[\r\n\0]/.test(token)) {
      const path = auth.type === 'oauth2ClientCredentials' ? 'access_token' : auth.tokenPath;
      throw new AuthError(`${where}: no usable token at ${path}`);
    }
    deps.secrets.remember(token);
    ok = true;
    return { token, renewAt: renewAt(fetchedAt, lifetimeMs ?? DEFAULT_TOKEN_TTL_MS) };
  } finally {
    deps.onFetch?.(actionId, ok);
  }
}

/** Shares a fetched token with every worker until it is due for renewal. */
async function storeShared(deps: TokenProviderDeps, id: string, fresh: CachedToken, actionId: string, auth: TokenAuth): Promise<void> {
  const ttl = Math.max(1, fresh.renewAt - (deps.now ?? Date.now)());
  await deps.redis.set(deps.keys.token(id), JSON.stringify(fresh), 'PX', ttl);
  deps.logger.info({ actionId, auth: auth.type, renewInMs: ttl }, 'access token fetched');
}

/** Answers from memory, until `until`, the callers of a token endpoint that refused the client. */
function rememberRefusal(refusals: Map<string, { until: number; error: AuthError }>, id: string, until: number, error: AuthError): void {
  if (refusals.size > 1000) refusals.clear();
  refusals.set(id, { until, error });
}

export function createTokenProvider(deps: TokenProviderDeps): TokenProvider {
  const now = deps.now ?? Date.now;
  const local = new Map<string, CachedToken>();
  const inflight = new Map<string, Promise<string>>();
  /** A token endpoint that refused the client is not asked again for a while: no login storm per queued job. */
  const refusals = new Map<string, { until: number; error: AuthError }>();
  const owner = randomUUID();

  const usable = (c: CachedToken | undefined, rejected: string | undefined): c is CachedToken =>
    c !== undefined && c.token !== rejected && now() < c.renewAt;

  async function obtain(auth: TokenAuth, id: string, actionId: string, rejected: string | undefined): Promise<string> {
    const lockKey = deps.keys.tokenLock(id);
    // The lock outlives a token request (one deadline, connect to last byte) with room to spare.
    const lockMs = (deps.timeoutMs ?? TOKEN_TIMEOUT_MS) * 3 + 5000;
    const deadline = now() + lockMs * 2;
    for (;;) {
      const shared = await readShared(deps, id);
      if (usable(shared, rejected)) {
        deps.secrets.remember(shared.token);
        local.set(id, shared);
        return shared.token;
      }
      const got = await deps.redis.set(lockKey, owner, 'PX', lockMs, 'NX');
      if (got === 'OK') {
        try {
          // Another caller may have stored a fresh token between our read and our lock.
          const again = await readShared(deps, id);
          if (usable(again, rejected)) {
            deps.secrets.remember(again.token);
            local.set(id, again);
            return again.token;
          }
          const fresh = await fetchToken(deps, auth, actionId).catch((err: unknown) => {
            if (err instanceof AuthError && !err.retryable) rememberRefusal(refusals, id, now() + REFUSAL_HOLD_MS, err);
            throw err;
          });
          await storeShared(deps, id, fresh, actionId, auth);
          local.set(id, fresh);
          return fresh.token;
        } finally {
          await RELEASE.run(deps.redis, 1, lockKey, owner).catch(() => undefined);
        }
      }
      if (now() > deadline) throw new AuthError(`waited ${lockMs * 2} ms for another worker's token request`, true);
      await new Promise((r) => setTimeout(r, WAIT_POLL_MS));
    }
  }

  function shared(auth: TokenAuth, id: string, actionId: string, rejected: string | undefined): { p: Promise<string>; mine: boolean } {
    const running = inflight.get(id);
    if (running) return { p: running, mine: false };
    const p = obtain(auth, id, actionId, rejected).finally(() => inflight.delete(id));
    inflight.set(id, p);
    return { p, mine: true };
  }

  return {
    async get(auth, actionId, rejected) {
      const id = tokenId(auth);
      const cached = local.get(id);
      if (usable(cached, rejected)) {
        // Cheap, and keeps a long-lived token in the redaction set however many others rotate through it.
        deps.secrets.remember(cached.token);
        return cached.token;
      }
      const refused = refusals.get(id);
      if (refused && now() < refused.until) throw refused.error;
      // One request per process at a time; across processes the Redis lock does the same.
      const first = shared(auth, id, actionId, rejected);
      const token = await first.p;
      // Joined a fetch that began before this caller's 401: it may hand back the rejected token.
      // Ask once more; an endpoint that issues the same token again gets the same answer.
      if (token === rejected && !first.mine) return shared(auth, id, actionId, rejected).p;
      return token;
    },
  };
}
