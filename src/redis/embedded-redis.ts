import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';

export interface EmbeddedRedis {
  url: string;
  /** Present when this process started the server. */
  process?: ChildProcess;
  stop(): Promise<void>;
}

/** The process id of the Redis answering at `url`, or null when none answers within a short time. */
export async function answeringPid(url: string, timeoutMs: number): Promise<number | null> {
  const client = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs, // a listener that is not Redis accepts and never answers
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const pid = /^process_id:(\d+)/m.exec(await client.info('server'))?.[1];
    return pid === undefined ? null : Number(pid);
  } catch {
    return null;
  } finally {
    client.disconnect();
  }
}

/** Whether a Redis answers PING at `url` within a short time. */
export async function redisAnswers(url: string, timeoutMs = 1500): Promise<boolean> {
  const client = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs, // a listener that is not Redis accepts and never answers
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export function redisServerOnPath(): boolean {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
}

/**
 * Starts a private redis-server on a free loopback port, keeping nothing on disk.
 *
 * The port is free when `freePort` returns it, but another process can take it before
 * redis-server binds (a client's outgoing connection draws from the same range). The server
 * then exits at once; that attempt is dropped and another port tried, so a lost race costs a
 * retry, not a failed start or, worse, a PING answered by somebody else's server.
 */
export async function startPrivateRedis(
  extraArgs: string[] = [],
  { pickPort = freePort }: { pickPort?: () => Promise<number> } = {},
): Promise<EmbeddedRedis> {
  const attempts = 3;
  for (let attempt = 1; ; attempt++) {
    const started = await startOnPort(await pickPort(), extraArgs);
    if (started.ok) return started.redis;
    if (attempt >= attempts) throw new Error(`redis-server did not start after ${attempts} attempts: ${started.reason}`);
  }
}

type StartAttempt = { ok: true; redis: EmbeddedRedis } | { ok: false; reason: string };

async function startOnPort(port: number, extraArgs: string[]): Promise<StartAttempt> {
  const dir = mkdtempSync(join(tmpdir(), 'action-relay-redis-'));
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...extraArgs],
    { stdio: 'ignore' },
  );
  let exited = false;
  const exit = new Promise<void>((resolve) => {
    const done = () => ((exited = true), resolve());
    child.once('exit', done);
    child.once('error', done); // not spawned at all (e.g. not on the PATH): 'exit' may never come
  });
  const url = `redis://127.0.0.1:${port}`;
  const giveUp = async (reason: string): Promise<StartAttempt> => {
    if (!exited) child.kill('SIGKILL');
    await exit;
    rmSync(dir, { recursive: true, force: true });
    return { ok: false, reason };
  };
  for (let i = 0; i < 100 && !exited; i++) {
    // Only our child's answer counts: if it lost the port, another server may answer there.
    const pid = await answeringPid(url, 200);
    if (pid !== null && pid !== child.pid) return giveUp(`another server answers on ${url}`);
    if (pid !== null && !exited) {
      return {
        ok: true,
        redis: {
          url,
          process: child,
          async stop() {
            if (!exited) child.kill('SIGTERM');
            await exit;
            rmSync(dir, { recursive: true, force: true });
          },
        },
      };
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return giveUp(exited ? `redis-server exited before answering on ${url}` : `redis-server did not answer on ${url}`);
}

/** Uses the Redis at `url` when it answers, else starts a private one when redis-server is installed. */
export async function ensureRedis(url: string): Promise<EmbeddedRedis> {
  if (await redisAnswers(url)) return { url, stop: async () => undefined };
  if (!redisServerOnPath()) {
    throw new Error(`no Redis answers at ${url} and redis-server is not on the PATH: start Redis or set REDIS_URL`);
  }
  return startPrivateRedis();
}
