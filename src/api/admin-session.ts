import { createHmac, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';

/** Name of the cookie that lets a browser reach /admin/* and /console after it gave a token once. */
export const ADMIN_COOKIE = 'action_relay_admin';
/** How long a browser session lasts before the token must be given again. @defaultValue 12 h */
export const ADMIN_SESSION_MS = 12 * 3_600_000;

/*
 * A browser cannot put `Authorization: Bearer` on the page, scripts and styles of bull-board (or
 * the console), so /admin/* and /console also accept a cookie, obtained by opening
 * /admin/queues?token=<a token with the admin scope> once:
 * - the cookie holds `<expiry>.<token name>.<HMAC-SHA256(key, expiry and name)>`, not the token: it
 *   opens the browser pages only (/v1/* never reads it), until it expires, the key changes or the
 *   named token loses its admin scope. The key is ADMIN_TOKEN when set, so every API process with
 *   the same token accepts it and no session store is needed; otherwise a random key per process;
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
}

export interface AdminSessionOptions {
  /** Signs the cookies. */
  key: string | Buffer;
  /** The name of an admin token, or undefined for any other string. */
  identify(token: string): string | undefined;
  /** @defaultValue Date.now */
  now?: () => number;
}

export function createAdminSession(opts: AdminSessionOptions): AdminSession {
  const now = opts.now ?? Date.now;
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
      const name = given === null ? undefined : opts.identify(given);
      if (name === undefined) return false;
      const expiry = now() + ADMIN_SESSION_MS;
      const secure = req.protocol === 'https' || req.headers['x-forwarded-proto'] === 'https' ? '; Secure' : '';
      const value = `${expiry}.${Buffer.from(name).toString('base64url')}.${sign(opts.key, expiry, name).toString('base64url')}`;
      url.searchParams.delete('token');
      reply
        .header(
          'set-cookie',
          `${ADMIN_COOKIE}=${value}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=${ADMIN_SESSION_MS / 1000}${secure}`,
        )
        .header('cache-control', 'no-store')
        .redirect(url.pathname + url.search, 303);
      return true;
    },
  };
}
