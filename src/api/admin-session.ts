import { createHmac, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';

/** Name of the cookie that lets a browser reach /admin/* and /console after it gave a token once. */
export const ADMIN_COOKIE = 'action_relay_admin';
/** How long a browser session lasts before the token must be given again. @defaultValue 12 h */
export const ADMIN_SESSION_MS = 12 * 3_600_000;

/**
 * A request that changes something is accepted with the session cookie only when it carries this
 * header, which a page of another origin cannot add without a CORS preflight that the API never
 * grants (SameSite=Strict does not separate two ports of one host: browsers count them one site).
 */
export const CONSOLE_HEADER = 'x-action-relay-console';

/*
 * A browser cannot put `Authorization: Bearer` on the page, scripts and styles of bull-board (or
 * the console), so /admin/* and /console also accept a cookie, obtained by opening
 * /admin/queues?token=<token> once, or from the console's sign-in form (a POST: the token is never
 * in a URL):
 * - the cookie holds `<expiry>.<token name>.<HMAC-SHA256(key, expiry and name)>`, not the token: it
 *   stands for the named token and its scopes until it expires, the key changes or the token is
 *   removed. The console's page calls /v1/* and /console/api/* with it (a change only with the
 *   CONSOLE_HEADER). The key is ADMIN_TOKEN when set, so every API process with the same token
 *   accepts it and no session store is needed; otherwise a random key per process;
 * - HttpOnly, so page scripts cannot read it; SameSite=Strict, so another site cannot make the
 *   browser send it (no cross-site request forgery on the board's PUT routes);
 * - the token leaves the address bar at once (303 to the same URL without it), but it was in a URL:
 *   a proxy's access log or the browser history may keep it. Where that matters, let a proxy in
 *   front add the Authorization header instead.
 */

function sign(key: string | Buffer, expiry: number, name: string): Buffer {
  return createHmac('sha256', key).update(`action-relay admin session ${expiry} ${name}`).digest();
}

function equal(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of header?.split(';') ?? []) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

export interface AdminSession {
  /** The name of the token that opened the session, when the request carries a valid, unexpired cookie. */
  accepts(req: FastifyRequest): string | undefined;
  /**
   * For a GET whose `?token=` is a token with the admin scope: sets the session cookie and
   * redirects to the same URL without the token. Returns false (and sends nothing) otherwise.
   */
  login(req: FastifyRequest, reply: FastifyReply): boolean;
  /** For the console's sign-in form: sets the session cookie when `token` is known; false (nothing set) otherwise. */
  signIn(token: string, req: FastifyRequest, reply: FastifyReply): boolean;
  /** Asks the browser to forget the session cookie. */
  signOut(reply: FastifyReply): void;
}

export interface AdminSessionOptions {
  /** Signs the cookies. */
  key: string | Buffer;
  /** The name of a known token, or undefined for any other string. */
  identify(token: string): string | undefined;
  /** @defaultValue Date.now */
  now?: () => number;
}

export function createAdminSession(opts: AdminSessionOptions): AdminSession {
  const now = opts.now ?? Date.now;
  /** Sets the cookie for the token `given`; false when it is not a known token. */
  const issue = (given: string, req: FastifyRequest, reply: FastifyReply): boolean => {
    const name = opts.identify(given);
    if (name === undefined) return false;
    const expiry = now() + ADMIN_SESSION_MS;
    const secure = req.protocol === 'https' || req.headers['x-forwarded-proto'] === 'https' ? '; Secure' : '';
    const value = `${expiry}.${Buffer.from(name).toString('base64url')}.${sign(opts.key, expiry, name).toString('base64url')}`;
    reply
      .header('set-cookie', `${ADMIN_COOKIE}=${value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${ADMIN_SESSION_MS / 1000}${secure}`)
      .header('cache-control', 'no-store');
    return true;
  };
  return {
    accepts(req) {
      const parts = cookieValue(req.headers.cookie, ADMIN_COOKIE)?.split('.');
      if (parts?.length !== 3) return undefined;
      const [rawExpiry, rawName, sig] = parts as [string, string, string];
      const expiry = Number(rawExpiry);
      if (!Number.isSafeInteger(expiry) || expiry <= now()) return undefined;
      const name = Buffer.from(rawName, 'base64url').toString('utf8');
      return equal(Buffer.from(sig, 'base64url'), sign(opts.key, expiry, name)) ? name : undefined;
    },
    login(req, reply) {
      if (req.method !== 'GET') return false;
      const url = new URL(req.url, 'http://localhost');
      const given = url.searchParams.get('token');
      if (given === null || !issue(given, req, reply)) return false;
      url.searchParams.delete('token');
      reply.redirect(url.pathname + url.search, 303);
      return true;
    },
    signIn: issue,
    signOut(reply) {
      reply.header('set-cookie', `${ADMIN_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0`).header('cache-control', 'no-store');
    },
  };
}
