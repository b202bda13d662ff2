import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';

/** Name of the cookie that lets a browser reach /admin/* after it gave the token once. */
export const ADMIN_COOKIE = 'action_relay_admin';
/** How long a browser session lasts before the token must be given again. @defaultValue 12 h */
export const ADMIN_SESSION_MS = 12 * 3_600_000;

/*
 * A browser cannot put `Authorization: Bearer` on the page, scripts and styles of bull-board, so
 * /admin/* also accepts a cookie, obtained by opening /admin/queues?token=<ADMIN_TOKEN> once:
 * - the cookie holds `<expiry>.<HMAC-SHA256(ADMIN_TOKEN, expiry)>`, not the token: it opens /admin/*
 *   only (Path=/admin, and /v1/* never reads it), until it expires or ADMIN_TOKEN changes; every API
 *   process with the same token accepts it, so no session store is needed;
 * - HttpOnly, so page scripts cannot read it; SameSite=Strict, so another site cannot make the
 *   browser send it (no cross-site request forgery on the board's PUT routes);
 * - the token leaves the address bar at once (303 to the same URL without it), but it was in a URL:
 *   a proxy's access log or the browser history may keep it. Where that matters, let a proxy in
 *   front add the Authorization header instead.
 */

/** The console's session cookie: opens /console, /console/api/* and /v1/* for the browser that signed in. */
export const CONSOLE_COOKIE = 'action_relay_console';

/**
 * The console's cookie works as the admin one, with three differences: it is obtained by a POST of
 * the token from the sign-in page (never in a URL); it has Path=/, as the console's page calls /v1/*
 * with it; and it is accepted on a request that changes something only when the request carries
 * the CONSOLE_HEADER, which a page of another origin cannot add without a CORS preflight that this
 * API never grants (SameSite=Strict does not separate two ports of one host: they are one site).
 */
export const CONSOLE_HEADER = 'x-action-relay-console';

interface CookieSpec {
  name: string;
  path: string;
  /** Part of the signed text, so that one kind of cookie is never accepted as the other. */
  purpose: string;
}

const ADMIN_SPEC: CookieSpec = { name: ADMIN_COOKIE, path: '/admin', purpose: 'admin' };
const CONSOLE_SPEC: CookieSpec = { name: CONSOLE_COOKIE, path: '/', purpose: 'console' };

function sign(token: string, purpose: string, expiry: number): Buffer {
  // The admin cookie's text is unchanged, so sessions opened before the console existed stay valid.
  const what = purpose === 'admin' ? 'admin session' : `${purpose} session`;
  return createHmac('sha256', token).update(`action-relay ${what} ${expiry}`).digest();
}

function equal(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Compared as digests, so that the time taken says nothing of the token's length either. */
const digest = (s: string) => createHash('sha256').update(s).digest();

function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of header?.split(';') ?? []) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

const isHttps = (req: FastifyRequest) => req.protocol === 'https' || req.headers['x-forwarded-proto'] === 'https';

/** Signing, checking and clearing one kind of session cookie. */
function cookieSession(token: string, spec: CookieSpec, now: () => number) {
  return {
    valid(req: FastifyRequest): boolean {
      const value = cookieValue(req.headers.cookie, spec.name);
      const dot = value?.indexOf('.') ?? -1;
      if (!value || dot <= 0) return false;
      const expiry = Number(value.slice(0, dot));
      if (!Number.isSafeInteger(expiry) || expiry <= now()) return false;
      return equal(Buffer.from(value.slice(dot + 1), 'base64url'), sign(token, spec.purpose, expiry));
    },
    set(req: FastifyRequest, reply: FastifyReply): void {
      const expiry = now() + ADMIN_SESSION_MS;
      const secure = isHttps(req) ? '; Secure' : '';
      reply
        .header(
          'set-cookie',
          `${spec.name}=${expiry}.${sign(token, spec.purpose, expiry).toString('base64url')}; Path=${spec.path}; HttpOnly; SameSite=Strict; Max-Age=${ADMIN_SESSION_MS / 1000}${secure}`,
        )
        .header('cache-control', 'no-store');
    },
    clear(reply: FastifyReply): void {
      reply
        .header('set-cookie', `${spec.name}=; Path=${spec.path}; HttpOnly; SameSite=Strict; Max-Age=0`)
        .header('cache-control', 'no-store');
    },
  };
}

export interface AdminSession {
  /** True when the request carries a valid, unexpired session cookie. */
  accepts(req: FastifyRequest): boolean;
  /**
   * For a GET whose `?token=` is the admin token: sets the session cookie and redirects to the same
   * URL without the token. Returns false (and sends nothing) otherwise.
   */
  login(req: FastifyRequest, reply: FastifyReply): boolean;
}

export function createAdminSession(token: string, now: () => number = Date.now): AdminSession {
  const expected = digest(token);
  const cookie = cookieSession(token, ADMIN_SPEC, now);
  return {
    accepts: (req) => cookie.valid(req),
    login(req, reply) {
      if (req.method !== 'GET') return false;
      const url = new URL(req.url, 'http://localhost');
      const given = url.searchParams.get('token');
      if (given === null || !equal(digest(given), expected)) return false;
      url.searchParams.delete('token');
      cookie.set(req, reply);
      reply.redirect(url.pathname + url.search, 303);
      return true;
    },
  };
}

export interface ConsoleSession {
  /**
   * True when the request carries a valid, unexpired console cookie and, unless it is a GET or
   * HEAD, the CONSOLE_HEADER.
   */
  accepts(req: FastifyRequest): boolean;
  /** Sets the cookie when `given` is the token; false (and nothing set) otherwise. */
  signIn(given: string, req: FastifyRequest, reply: FastifyReply): boolean;
  /** Asks the browser to forget the cookie. */
  signOut(reply: FastifyReply): void;
}

export function createConsoleSession(token: string, now: () => number = Date.now): ConsoleSession {
  const expected = digest(token);
  const cookie = cookieSession(token, CONSOLE_SPEC, now);
  return {
    accepts(req) {
      const safe = req.method === 'GET' || req.method === 'HEAD';
      return (safe || req.headers[CONSOLE_HEADER] !== undefined) && cookie.valid(req);
    },
    signIn(given, req, reply) {
      if (!equal(digest(given), expected)) return false;
      cookie.set(req, reply);
      return true;
    },
    signOut: (reply) => cookie.clear(reply),
  };
}
