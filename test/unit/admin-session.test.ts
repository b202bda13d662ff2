import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_SESSION_MS, createAdminSession } from '../../src/api/admin-session.js';

const TOKEN = 'unit-admin-token-0123456789';
let clock = 1_700_000_000_000;
let app: FastifyInstance;

beforeAll(async () => {
  app = Fastify();
  // Session a knows TOKEN as the admin token "ops"; b signs with another key, as after ADMIN_TOKEN changed.
  const identify = (t: string) => (t === TOKEN ? 'ops' : undefined);
  const sessions = {
    a: createAdminSession({ key: TOKEN, identify, now: () => clock }),
    b: createAdminSession({ key: `${TOKEN}-rotated`, identify, now: () => clock }),
  };
  for (const [name, session] of Object.entries(sessions)) {
    app.route({
      method: ['GET', 'POST'],
      url: `/admin/${name}`,
      handler: async (req, reply) => (session.login(req, reply) ? reply : { accepted: session.accepts(req) ?? false }),
    });
  }
  await app.ready();
});

afterAll(() => app.close());

async function login(path = '/admin/a', headers: Record<string, string> = {}) {
  const res = await app.inject({ method: 'GET', url: `${path}?keep=1&token=${TOKEN}`, headers });
  expect(res.statusCode).toBe(303);
  return { res, cookie: String(res.headers['set-cookie']).split(';')[0] as string };
}

const accepted = async (cookie: string, path = '/admin/a') =>
  (await app.inject({ method: 'GET', url: path, headers: { cookie } })).json().accepted;

describe('admin session cookie', () => {
  it('is set by a GET with the token, which is taken out of the URL', async () => {
    const { res, cookie } = await login();
    expect(res.headers.location).toBe('/admin/a?keep=1');
    expect(res.headers['cache-control']).toBe('no-store');
    expect(await accepted(cookie)).toBe('ops');
    expect(await accepted(`other=1; ${cookie}; more=2`)).toBe('ops');
  });

  it('lasts ADMIN_SESSION_MS, then the token must be given again', async () => {
    const { cookie } = await login();
    clock += ADMIN_SESSION_MS - 1;
    expect(await accepted(cookie)).toBe('ops');
    clock += 1;
    expect(await accepted(cookie)).toBe(false);
  });

  it('is worthless once ADMIN_TOKEN changes', async () => {
    const { cookie } = await login();
    expect(await accepted(cookie, '/admin/b')).toBe(false);
  });

  it('cannot be renamed to another token: the name is signed', async () => {
    const { cookie } = await login();
    const [expiry, , sig] = cookie.split('=')[1]!.split('.');
    const forged = `action_relay_admin=${expiry}.${Buffer.from('root').toString('base64url')}.${sig}`;
    expect(await accepted(forged)).toBe(false);
  });

  it('refuses a wrong token, a POST, and cookies that are not its own', async () => {
    expect((await app.inject({ method: 'GET', url: `/admin/a?token=${TOKEN.slice(1)}` })).json()).toEqual({ accepted: false });
    expect((await app.inject({ method: 'POST', url: `/admin/a?token=${TOKEN}` })).json()).toEqual({ accepted: false });
    for (const cookie of [
      'action_relay_admin=',
      'action_relay_admin=abc',
      `action_relay_admin=${clock + 1000}.`,
      'action_relay_admin=.xyz',
    ]) {
      expect(await accepted(cookie), cookie).toBe(false);
    }
  });

  it('is Secure behind an HTTPS proxy', async () => {
    const plain = await login();
    expect(String(plain.res.headers['set-cookie'])).not.toContain('Secure');
    const tls = await login('/admin/a', { 'x-forwarded-proto': 'https' });
    expect(String(tls.res.headers['set-cookie'])).toMatch(/; Secure$/);
  });
});
