import { readdir, readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { extname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { RelayContext } from '../context/relay-context.js';
import { ValidationError } from '../errors/errors.js';
import { formatIssues } from '../actions/param-validator.js';
import { readActivity, type ActivityCounts } from '../queue/action-activity.js';
import { readCircuitState, type CircuitState } from '../delivery/circuit-breaker.js';
import { isJobId } from '../queue/job-id.js';
import { getJobStatus, type JobStatus } from '../queue/job-status.js';
import type { AdminSession } from './admin-session.js';
import { sendError } from './api-errors.js';

/** Where the console's page is served. */
export const CONSOLE_PATH = '/console';
/** The console's own data routes; access control guards them as it guards /v1/*. */
export const CONSOLE_API_PATH = '/console/api/';

/**
 * The built assets: dist/console of the checkout when run from the sources (tests, tsx), or
 * dist/console beside dist/src when compiled. (From src/api, ../../console is the console's source
 * folder, which has an index.html too: the built one is tried first, and needs its assets/.)
 */
const BUILT_DIRS = [new URL('../../dist/console/', import.meta.url), new URL('../../console/', import.meta.url)].map((u) =>
  fileURLToPath(u),
);
const isBuilt = (dir: string) => existsSync(join(dir, 'index.html')) && existsSync(join(dir, 'assets'));

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
};

/** Everything from this origin, nothing inline, nothing from elsewhere, never in a frame. */
const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

export interface ConsoleOptions {
  /** The browser session its sign-in form opens; undefined when the API has no token (loopback only, open). */
  session: Pick<AdminSession, 'signIn' | 'signOut'> | undefined;
  /** The scopes of the caller, for the console to show only what it may do. */
  scopesOf(req: FastifyRequest): readonly string[];
  /** A folder with the built console (index.html, login.html, assets/). @defaultValue dist/console */
  assetsDir?: string;
}

interface Asset {
  body: Buffer;
  type: string;
}

/** Reads the built console into memory once: a few files, served many times. */
async function loadAssets(dir: string): Promise<Map<string, Asset>> {
  const assets = new Map<string, Asset>();
  const walk = async (folder: string): Promise<void> => {
    for (const entry of await readdir(folder, { withFileTypes: true })) {
      const path = join(folder, entry.name);
      if (entry.isDirectory()) await walk(path);
      else
        assets.set(relative(dir, path).split(sep).join('/'), {
          body: await readFile(path),
          type: TYPES[extname(path)] ?? 'application/octet-stream',
        });
    }
  };
  await walk(dir);
  return assets;
}

const signInSchema = z.strictObject({ token: z.string().min(1).max(4096) });
const jobStatesSchema = z.strictObject({ jobIds: z.array(z.string().min(1).max(512)).min(1).max(500) });

export interface ConsoleActionRow {
  id: string;
  name: string;
  version: number;
  method: string;
  url: string;
  /** The rate-limit and circuit key. */
  limitKey: string;
  circuit: CircuitState;
  last15m: ActivityCounts;
  lastHour: ActivityCounts;
}

/**
 * The console: its page and assets under /console, the sign-in route, and three data routes of its
 * own under /console/api/ (the rest it reads and changes through /v1/*):
 * - GET  session   who is signed in and what they may do;
 * - GET  activity  every action with its counts over 15 min and 1 h and its circuit state;
 * - POST validate  the checks of PUT /v1/actions/:id without saving (one source of the rules);
 * - POST jobs      the states of up to 500 jobs (the outcome of a replay).
 */
export async function registerConsole(app: FastifyInstance, ctx: RelayContext, opts: ConsoleOptions): Promise<void> {
  const dir = opts.assetsDir ?? BUILT_DIRS.find(isBuilt);
  const assets = dir ? await loadAssets(dir) : new Map<string, Asset>();

  const send = (reply: FastifyReply, name: string, cache: string) => {
    const asset = assets.get(name);
    if (!asset) {
      if (name.endsWith('.html')) {
        return sendError(
          reply,
          503,
          'console_not_built',
          'the console is not built: run `npm run build` (it runs `npm run build:console`)',
        );
      }
      return sendError(reply, 404, 'not_found', `no console asset ${name}`);
    }
    return reply
      .header('content-type', asset.type)
      .header('cache-control', cache)
      .header('content-security-policy', CSP)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .send(asset.body);
  };

  // Access control has sent a browser without a session to the sign-in page already.
  const page = async (_req: FastifyRequest, reply: FastifyReply) => send(reply, 'index.html', 'no-store');
  app.get(CONSOLE_PATH, page);
  app.get(`${CONSOLE_PATH}/`, page);
  app.get(`${CONSOLE_PATH}/login`, async (_req, reply) => send(reply, 'login.html', 'no-store'));
  // File names carry a content hash: cached for a year.
  app.get<{ Params: { '*': string } }>(`${CONSOLE_PATH}/assets/*`, async (req, reply) =>
    send(reply, `assets/${req.params['*']}`, 'public, max-age=31536000, immutable'),
  );

  app.post(`${CONSOLE_PATH}/session`, async (req, reply) => {
    const parsed = signInSchema.safeParse(req.body ?? {});
    if (!parsed.success) throw new ValidationError('invalid request', formatIssues(parsed.error, '', req.body));
    if (!opts.session) return reply.code(204).send();
    if (!opts.session.signIn(parsed.data.token, req, reply)) return sendError(reply, 401, 'unauthorized', 'this token is not accepted');
    return reply.code(204).send();
  });
  app.delete(`${CONSOLE_PATH}/session`, async (_req, reply) => {
    opts.session?.signOut(reply);
    return reply.code(204).send();
  });

  app.get(`${CONSOLE_API_PATH}session`, async (req) => ({ auth: opts.session ? 'token' : 'none', scopes: opts.scopesOf(req) }));

  app.get(`${CONSOLE_API_PATH}activity`, async () => {
    const now = Date.now();
    const [stored, activity] = await Promise.all([ctx.store.list(), readActivity(ctx.redis, ctx.keys.partitions, now)]);
    const limitKeys = await Promise.all(stored.map(async (s) => (await ctx.store.getCompiled(s.definition.id))?.limitKey ?? ''));
    const circuits = new Map<string, Promise<CircuitState>>();
    for (const key of limitKeys) if (key && !circuits.has(key)) circuits.set(key, readCircuitState(ctx.redis, ctx.keys, key, now));
    const items: ConsoleActionRow[] = await Promise.all(
      stored.map(async (s, i) => {
        const key = limitKeys[i] ?? '';
        const counts = activity.get(s.definition.id);
        return {
          id: s.definition.id,
          name: s.definition.name,
          version: s.version,
          method: s.definition.endpoint.method,
          url: s.definition.endpoint.url + (s.definition.endpoint.path ?? ''),
          limitKey: key,
          circuit: key ? await (circuits.get(key) as Promise<CircuitState>) : 'closed',
          last15m: counts?.last15m ?? { delivered: 0, dead: 0, retries: 0 },
          lastHour: counts?.lastHour ?? { delivered: 0, dead: 0, retries: 0 },
        };
      }),
    );
    return { generatedAt: new Date(now).toISOString(), items };
  });

  app.post(`${CONSOLE_API_PATH}validate`, async (req) => {
    try {
      await ctx.store.validate(req.body);
      return { valid: true, problems: [] };
    } catch (err: unknown) {
      if (err instanceof ValidationError) return { valid: false, problems: err.problems };
      throw err;
    }
  });

  app.post(`${CONSOLE_API_PATH}jobs`, async (req) => {
    const parsed = jobStatesSchema.safeParse(req.body ?? {});
    if (!parsed.success) throw new ValidationError('invalid request', formatIssues(parsed.error, '', req.body));
    const items: (JobStatus | { jobId: string; state: 'unknown' })[] = [];
    // A few at a time: each is a handful of Redis reads.
    const ids = parsed.data.jobIds;
    for (let i = 0; i < ids.length; i += 50) {
      // An id that is not a job id (`meta`, `events`: BullMQ's own keys) is unknown, as on /v1/jobs/:id.
      const page = await Promise.all(ids.slice(i, i + 50).map((id) => (isJobId(id) ? getJobStatus(ctx.queues, ctx.redis, id) : null)));
      page.forEach((status, j) => items.push(status ?? { jobId: ids[i + j] as string, state: 'unknown' }));
    }
    return { items };
  });
}
