import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { isLoopbackAddress, normalizeHost } from '../delivery/egress-guard.js';
import { sendError } from './api-errors.js';
import { CONSOLE_HEADER, createAdminSession, type AdminSession } from './admin-session.js';
import { SCOPES, tokenDigest, type ApiToken, type Scope } from './api-tokens.js';
import { registerJsonBodyParser } from './json-body.js';

/*
 * Who may call what. Three families of paths:
 * - /v1/* and the console's data routes /console/api/*: the API. A token's scopes decide
 *   (ROUTE_SCOPES below; `admin` opens everything). The console's page calls them with the session
 *   cookie (admin-session.ts); a call that changes something also needs its CONSOLE_HEADER;
 * - /admin/* and /console: browser pages. The queue board needs the admin scope, the console the
 *   read scope (what a token may change there, the API routes decide); a browser may show the
 *   session cookie instead of the header;
 * - the rest (/healthz, /readyz, /metrics, /docs, and the console's sign-in page, assets and
 *   session route): open, as a load balancer, Prometheus or a browser that has not signed in needs.
 * Without any token (neither ADMIN_TOKEN nor API_TOKENS_FILE) the API binds to loopback only, and
 * every request is checked as a web page could forge it: its Host (DNS rebinding) and its Origin.
 */

/**
 * Scopes that open a route besides `admin`, by fastify route pattern (any parameter name). Every
 * GET (and HEAD) under /v1 is also open to `read`; a route not listed here needs `admin`.
 */
const ROUTE_SCOPES: [method: string, route: RegExp, scope: Scope][] = [
  ['POST', /^\/v1\/jobs$/, 'enqueue'],
  ['POST', /^\/v1\/jobs\/batch$/, 'enqueue'],
  ['GET', /^\/v1\/jobs\/:[^/]+$/, 'enqueue'],
  ['POST', /^\/v1\/actions\/:[^/]+\/preview$/, 'read'],
  ['POST', /^\/v1\/dlq\/replay$/, 'replay'],
  // The console's checks of a definition and its reading of job states change nothing.
  ['POST', /^\/console\/api\/validate$/, 'read'],
  ['POST', /^\/console\/api\/jobs$/, 'read'],
];

/** The console's pages and routes that a browser must reach before it has signed in. */
const CONSOLE_OPEN = new Set(['/console/login', '/console/session', '/console/assets/*']);

/** Calls that change nothing worth an audit line although they are not reads: enqueueing (the hot path) and preview. */
const NOT_AUDITED: [method: string, route: RegExp][] = [
  ['POST', /^\/v1\/jobs$/],
  ['POST', /^\/v1\/jobs\/batch$/],
  ['POST', /^\/v1\/actions\/:[^/]+\/preview$/],
  ['POST', /^\/console\/api\/validate$/],
  ['POST', /^\/console\/api\/jobs$/],
];

/** Sent with every answer: no MIME sniffing, no framing (clickjacking of the board), no Referer carrying ids. */
const SECURITY_HEADERS: Record<string, string> = {
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};

/**
 * Sets the headers sent with every answer (those the reply does not set itself): by the onSend
 * hook, and by the answers fastify makes before any hook runs (frameworkErrors).
 */
export function setSecurityHeaders(reply: FastifyReply): void {
  for (const [name, value] of Object.entries(SECURITY_HEADERS)) if (!reply.hasHeader(name)) reply.header(name, value);
  // A page that brings its own policy keeps it; X-Frame-Options still refuses framing.
  if (!reply.hasHeader('content-security-policy')) reply.header('content-security-policy', "frame-ancestors 'none'");
}

type Family = 'public' | 'api' | 'browser';

function familyOf(path: string): Family {
  if (path === '/v1' || path.startsWith('/v1/') || path.startsWith('/console/api/')) return 'api';
  if (CONSOLE_OPEN.has(path)) return 'public';
  if (path === '/admin' || path.startsWith('/admin/') || path === '/console' || path.startsWith('/console/')) return 'browser';
  return 'public';
}

/** The route a request matched (its pattern), or its path when none did. */
function routeOf(req: FastifyRequest): string {
  return req.routeOptions.url ?? req.url.split('?')[0] ?? req.url;
}

const verb = (method: string) => (method === 'HEAD' ? 'GET' : method);

/**
 * The scopes that open a route, `admin` first; null for an open route. The route is fastify's
 * pattern (`/v1/jobs/:jobId`), so a percent-encoded spelling of a path gets the same answer.
 */
export function scopesFor(method: string, route: string): Scope[] | null {
  const family = familyOf(route);
  if (family === 'public') return null;
  const open: Scope[] = ['admin'];
  if (family === 'browser' && route.startsWith('/console')) open.push('read');
  if (family === 'api') {
    for (const [m, pattern, scope] of ROUTE_SCOPES) if (m === verb(method) && pattern.test(route)) open.push(scope);
    if (verb(method) === 'GET' && !open.includes('read')) open.push('read');
  }
  return open;
}

/** Who made a request: a token's name and scopes (`loopback` in the no-token mode). */
export interface Principal {
  name: string;
  scopes: readonly Scope[];
}

const LOOPBACK: Principal = { name: 'loopback', scopes: SCOPES };

export interface AccessControlOptions {
  /** Every token the API accepts (API_TOKENS_FILE and ADMIN_TOKEN); none: the no-token loopback mode. */
  tokens: readonly ApiToken[];
  /** Signs browser sessions, so every API process with it accepts them. @defaultValue a random key per process */
  sessionKey?: string | undefined;
  /** API_ALLOWED_HOSTS: Host names answered in the no-token mode besides localhost and loopback addresses. */
  allowedHosts?: readonly string[] | undefined;
  /** Receives the `audit` lines and refusals. */
  logger: Logger;
}

/** The host name of a Host header, or undefined when it is not one. */
function hostName(host: string | undefined): string | undefined {
  // A name or an IP literal and a port, nothing a URL parser would read past (userinfo, a path).
  if (!host || !/^(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/.test(host)) return undefined;
  try {
    return normalizeHost(new URL(`http://${host}`).hostname);
  } catch {
    return undefined;
  }
}

/** Host and port as a browser compares origins. */
function originKey(protocol: string, hostname: string, port: string): string {
  return `${protocol}//${normalizeHost(hostname)}:${port || (protocol === 'https:' ? '443' : '80')}`;
}

/**
 * In the no-token mode, a request a web page could have made: a Host other than loopback (DNS
 * rebinding: evil.example resolving to 127.0.0.1) or an Origin other than the API's own.
 */
function crossSiteRefusal(
  req: FastifyRequest,
  allowed: ReadonlySet<string>,
): { status: number; code: string; message: string } | undefined {
  const host = hostName(req.headers.host);
  if (host === undefined || !(host === 'localhost' || isLoopbackAddress(host) || allowed.has(host))) {
    return {
      status: 421,
      code: 'misdirected_request',
      message: 'this API runs without tokens and answers only to Host localhost, a loopback address or API_ALLOWED_HOSTS',
    };
  }
  const origin = req.headers.origin;
  if (origin === undefined) return undefined;
  let same = false;
  try {
    const o = new URL(origin);
    const own = new URL(`${req.protocol}://${req.headers.host ?? ''}`);
    same = originKey(o.protocol, o.hostname, o.port) === originKey(own.protocol, own.hostname, own.port);
  } catch {
    same = false;
  }
  if (same) return undefined;
  return { status: 403, code: 'forbidden', message: "cross-site request refused: its Origin is not this API's own" };
}

/** The media type of a Content-Type header, without parameters. */
function mediaType(header: string | undefined): string {
  return (header ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
}

const MAX_AUDIT_IDS = 100;

/** The first MAX_AUDIT_IDS strings of a list, and how many more there were. */
function idList(list: unknown): { ids: string[]; more: number } {
  const all = Array.isArray(list) ? list.filter((v): v is string => typeof v === 'string') : [];
  return { ids: all.slice(0, MAX_AUDIT_IDS), more: Math.max(0, all.length - MAX_AUDIT_IDS) };
}

/** Ids a route reports it touched beyond its answer (the dead letters a purge removed). */
const reportedIds = new WeakMap<FastifyRequest, string[]>();

/** Names, for the call's audit line, the ids a route touched that its answer does not list. */
export function auditTouched(req: FastifyRequest, ids: string[]): void {
  reportedIds.set(req, ids);
}

/**
 * What an audited call touched: the ids of its URL and the job ids it named (`ids`), the selection
 * of a replay or purge, and what was done: the dead letters a replay or purge took (`deadIds`, by
 * filter too), the new jobs of a replay (`resultIds`).
 */
function touched(req: FastifyRequest, payload: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const params = Object.values((req.params ?? {}) as Record<string, unknown>).filter((v) => typeof v === 'string');
  const body = (req.body ?? {}) as { jobIds?: unknown; filter?: unknown; all?: unknown; dryRun?: unknown };
  const named = idList(body.jobIds);
  out.ids = [...params, ...named.ids];
  if (named.more > 0) out.idsNotListed = named.more;
  for (const k of ['filter', 'all', 'dryRun'] as const) if (body[k] !== undefined) out[k] = body[k];
  const reported = reportedIds.get(req);
  if (reported) listIds(out, 'deadIds', reported);
  if (typeof payload !== 'string' || !payload.startsWith('{')) return out;
  let answer: { jobIds?: unknown; purged?: unknown; replayed?: unknown; matched?: unknown; replays?: unknown };
  try {
    answer = JSON.parse(payload) as typeof answer;
  } catch {
    return out;
  }
  for (const k of ['replayed', 'matched', 'purged'] as const) if (typeof answer[k] === 'number') out[k] = answer[k];
  if (Array.isArray(answer.replays))
    listIds(
      out,
      'deadIds',
      answer.replays.map((m) => (m as { from?: unknown } | null)?.from),
    );
  if (Array.isArray(answer.jobIds)) listIds(out, 'resultIds', answer.jobIds);
  return out;
}

/** Sets `out[key]` to the first MAX_AUDIT_IDS ids and `out[key + 'NotListed']` to how many more. */
function listIds(out: Record<string, unknown>, key: string, list: unknown): void {
  const { ids, more } = idList(list);
  out[key] = ids;
  if (more > 0) out[`${key}NotListed`] = more;
}

/**
 * Registers authentication, scopes, the no-token mode's cross-site checks, the JSON-only bodies of
 * /v1, security headers and audit lines on every route of `app` (routes added later included).
 */
/** What the routes registered after access control may ask of it. */
export interface AccessControl {
  /** Who made the request (set for every request that got past the checks; none for open routes). */
  principalOf(req: FastifyRequest): Principal | undefined;
  /** The browser session (the console's sign-in form); undefined in the no-token mode. */
  session: AdminSession | undefined;
}

export function registerAccessControl(app: FastifyInstance, opts: AccessControlOptions): AccessControl {
  const { logger } = opts;
  const byDigest = new Map(opts.tokens.map((t) => [t.sha256, t]));
  const byName = new Map(opts.tokens.map((t) => [t.name, t]));
  const noTokens = opts.tokens.length === 0;
  const allowedHosts = new Set((opts.allowedHosts ?? []).map(normalizeHost));
  const principals = new WeakMap<FastifyRequest, Principal>();

  // A map lookup by digest: the time it takes depends on the SHA-256 of what was sent, which says
  // nothing an attacker can use about any stored digest.
  const identify = (token: string) => byDigest.get(tokenDigest(token));
  const session = createAdminSession({
    key: opts.sessionKey ?? randomBytes(32),
    // Any token may open a session: each route still asks for its own scopes.
    identify: (token) => identify(token)?.name,
  });

  registerJsonBodyParser(app);

  app.addHook('onRequest', async (req, reply) => {
    const route = routeOf(req);
    const family = familyOf(route);
    if (noTokens) {
      const refused = crossSiteRefusal(req, allowedHosts);
      if (refused) return sendError(reply, refused.status, refused.code, refused.message);
      principals.set(req, LOOPBACK);
    } else {
      const open = scopesFor(req.method, route);
      if (open === null) return;
      const header = req.headers.authorization;
      let who: ApiToken | undefined = header?.startsWith('Bearer ') ? identify(header.slice(7)) : undefined;
      const safe = verb(req.method) === 'GET' || req.method === 'OPTIONS';
      if (!who && (family === 'browser' || safe || req.headers[CONSOLE_HEADER] !== undefined)) {
        const name = session.accepts(req);
        who = name === undefined ? undefined : byName.get(name);
        // ?token= in a URL (the queue board's way in) opens a session for an admin token only.
        if (
          !who &&
          family === 'browser' &&
          identify(new URL(req.url, 'http://localhost').searchParams.get('token') ?? '')?.scopes.includes('admin')
        ) {
          if (session.login(req, reply)) return reply;
        }
      }
      if (!who && family === 'browser' && route.startsWith('/console') && safe) {
        return reply.header('cache-control', 'no-store').redirect('/console/login', 303);
      }
      if (!who) {
        const hint = family === 'browser' ? ' (in a browser, open /admin/queues?token=<token> once)' : '';
        return sendError(reply, 401, 'unauthorized', `missing or wrong Authorization: Bearer token${hint}`);
      }
      if (!open.some((s) => who.scopes.includes(s))) {
        const needed = open.length > 1 ? `the ${open.slice(1).join(' or ')} scope (or admin)` : 'the admin scope';
        logger.warn({ tokenName: who.name, method: req.method, route }, 'access refused: scope missing');
        return sendError(
          reply,
          403,
          'forbidden',
          `${req.method} ${route} needs ${needed}; token "${who.name}" has ${who.scopes.join(', ')}`,
        );
      }
      principals.set(req, who);
    }
    // A form post or a no-cors fetch cannot send application/json: what it sends changes nothing.
    const method = verb(req.method);
    if (family === 'api' && (method === 'POST' || method === 'PUT' || method === 'PATCH')) {
      if (mediaType(req.headers['content-type']) !== 'application/json') {
        return sendError(
          reply,
          415,
          'unsupported_media_type',
          `${req.method} bodies are application/json (Content-Type: application/json)`,
        );
      }
    }
    return undefined;
  });

  app.addHook('onSend', async (req, reply, payload) => {
    setSecurityHeaders(reply);
    const who = principals.get(req);
    if (who && isAudited(req)) {
      logger.info(
        { audit: true, tokenName: who.name, method: req.method, route: routeOf(req), status: reply.statusCode, ...touched(req, payload) },
        'audit',
      );
    }
    return payload;
  });

  return { principalOf: (req) => principals.get(req), session: noTokens ? undefined : session };
}

/** Every change: any call under /v1 or of a browser page that is not a read, enqueueing and preview aside. */
function isAudited(req: FastifyRequest): boolean {
  const method = verb(req.method);
  const route = routeOf(req);
  if (method === 'GET' || method === 'OPTIONS' || familyOf(route) === 'public') return false;
  return !NOT_AUDITED.some(([m, pattern]) => m === method && pattern.test(route));
}
