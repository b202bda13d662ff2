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

function sign(token: string, expiry: number): Buffer {
  return createHmac('sha256', token).update(`action-relay admin session ${expiry}`).digest();
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
  return {
    accepts(req) {
      const value = cookieValue(req.headers.cookie, ADMIN_COOKIE);
      const dot = value?.indexOf('.') ?? -1;
      if (!value || dot <= 0) return false;
      const expiry = Number(value.slice(0, dot));
      if (!Number.isSafeInteger(expiry) || expiry <= now()) return false;
      return equal(Buffer.from(value.slice(dot + 1), 'base64url'), sign(token, expiry));
    },
    login(req, reply) {
      if (req.method !== 'GET') return false;
      const url = new URL(req.url, 'http://localhost');
      const given = url.searchParams.get('token');
      if (given === null || !equal(digest(given), expected)) return false;
      const expiry = now() + ADMIN_SESSION_MS;
      const secure = req.protocol === 'https' || req.headers['x-forwarded-proto'] === 'https' ? '; Secure' : '';
      url.searchParams.delete('token');
      reply
        .header(
          'set-cookie',
          `${ADMIN_COOKIE}=${expiry}.${sign(token, expiry).toString('base64url')}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=${ADMIN_SESSION_MS / 1000}${secure}`,
        )
        .header('cache-control', 'no-store')
        .redirect(url.pathname + url.search, 303);
      return true;
    },
  };
}
