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

/** Whether a Redis answers PING at `url` within a short time. */
export async function redisAnswers(url: string, timeoutMs = 1500): Promise<boolean> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: timeoutMs });
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

/** Starts a private redis-server on a free loopback port, keeping nothing on disk. */
export async function startPrivateRedis(extraArgs: string[] = []): Promise<EmbeddedRedis> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'action-relay-redis-'));
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...extraArgs],
    { stdio: 'ignore' },
  );
  const url = `redis://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    if (await redisAnswers(url, 200)) {
      return {
        url,
        process: child,
        async stop() {
          child.kill('SIGTERM');
          await new Promise((r) => child.once('exit', r));
          rmSync(dir, { recursive: true, force: true });
        },
      };
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGKILL');
  throw new Error(`redis-server did not answer on ${url}`);
}

/** Uses the Redis at `url` when it answers, else starts a private one when redis-server is installed. */
export async function ensureRedis(url: string): Promise<EmbeddedRedis> {
  if (await redisAnswers(url)) return { url, stop: async () => undefined };
  if (!redisServerOnPath()) {
    throw new Error(`no Redis answers at ${url} and redis-server is not on the PATH: start Redis or set REDIS_URL`);
  }
  return startPrivateRedis();
}
