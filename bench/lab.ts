// The bench's private world: its own redis-server on a loopback port, the sink process, and every
// child process it starts, all stopped by `stop()`. Nothing here touches another Redis.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { createInterface } from 'node:readline';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { envSchema } from '../src/config/config.js';
import { startPrivateRedis, type EmbeddedRedis } from '../src/redis/embedded-redis.js';
import type { SinkSummary } from './sink.js';

/** Compiled (dist/bench/*.js) or run from source with tsx (bench/*.ts). */
const fromSource = import.meta.url.endsWith('.ts');
const ext = fromSource ? 'ts' : 'js';
const loader = fromSource ? ['--import', 'tsx'] : [];

/** Node arguments that run a bench script (`sink`, `baseline-pool`...) or the action-relay CLI. */
export function scriptArgs(name: string): string[] {
  const file =
    name === 'action-relay' ? new URL(`../workers/action-relay.${ext}`, import.meta.url) : new URL(`./${name}.${ext}`, import.meta.url);
  return [...loader, file.pathname];
}

export interface Sink {
  url: string;
  pid: number;
  reset(): Promise<void>;
  summary(): Promise<SinkSummary>;
  arrivals(): Promise<number[]>;
}

export interface Lab {
  redisUrl: string;
  /** Commands and INFO on the private Redis. */
  admin: Redis;
  sink: Sink;
  /** Starts a child process that `stop()` ends; stderr is passed through. */
  spawnChild(args: string[], env: Record<string, string>, opts?: { ipc?: boolean; nodeArgs?: string[]; inspect?: boolean }): ChildProcess;
  /** The inspector WebSocket URL of a child spawned with `inspect` (on a loopback port of its own). */
  inspectorUrl(child: ChildProcess): Promise<string>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process has exited. */
  endChild(child: ChildProcess, graceMs?: number): Promise<void>;
  /** Empties the private Redis (only ever this one) between sections. */
  flush(): Promise<void>;
  stop(): Promise<void>;
}

async function control(url: string, path: string, method: 'GET' | 'POST' = 'GET'): Promise<unknown> {
  const res = await request(new URL(path, url), { method });
  const text = await res.body.text();
  return text ? JSON.parse(text) : undefined;
}

export async function startLab(): Promise<Lab> {
  const children = new Set<ChildProcess>();
  const redis: EmbeddedRedis = await startPrivateRedis();
  const admin = new Redis(redis.url, { maxRetriesPerRequest: 20 });

  // Children get only the settings given here: none of action-relay's own from this shell.
  const inherited: NodeJS.ProcessEnv = { ...process.env };
  for (const key of Object.keys(envSchema.shape)) delete inherited[key];

  const inspectors = new Map<ChildProcess, Promise<string>>();

  const spawnChild: Lab['spawnChild'] = (args, env, opts = {}) => {
    const stdio: SpawnOptions['stdio'] = opts.ipc ? ['ignore', 'ignore', 'pipe', 'ipc'] : ['ignore', 'ignore', 'pipe'];
    const nodeArgs = [...(opts.nodeArgs ?? []), ...(opts.inspect ? ['--inspect=127.0.0.1:0'] : [])];
    const child = spawn(process.execPath, [...nodeArgs, ...args], { env: { ...inherited, ...env }, stdio });
    let announced: (url: string) => void = () => undefined;
    if (opts.inspect) inspectors.set(child, new Promise((resolve) => (announced = resolve)));
    // Passed through, but for the CLI's note on a graceful stop and the inspector's own lines.
    createInterface({ input: child.stderr! }).on('line', (line) => {
      const ws = /^Debugger listening on (ws:\/\/\S+)/.exec(line);
      if (ws) announced(ws[1] as string);
      if (/^(stopping:|Debugger |For help, see|Waiting for the debugger)/.test(line)) return;
      process.stderr.write(`[worker ${child.pid}] ${line}\n`);
    });
    children.add(child);
    child.once('exit', () => {
      children.delete(child);
      inspectors.delete(child);
    });
    return child;
  };

  const endChild: Lab['endChild'] = (child, graceMs = 10_000) => {
    if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      child.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      child.kill('SIGTERM');
    });
  };

  const sinkProcess = spawn(process.execPath, scriptArgs('sink'), { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(sinkProcess);
  let base: string;
  try {
    const firstLine = await new Promise<string>((resolve, reject) => {
      const lines = createInterface({ input: sinkProcess.stdout! });
      lines.once('line', (l) => {
        lines.close();
        resolve(l);
      });
      sinkProcess.once('exit', (code) => reject(new Error(`sink exited with ${code}`)));
    });
    base = `http://127.0.0.1:${(JSON.parse(firstLine) as { port: number }).port}`;
  } catch (err: unknown) {
    // A lab that never started leaves nothing running: its private redis-server went on after a failed start.
    await endChild(sinkProcess, 1000);
    admin.disconnect();
    await redis.stop();
    throw err;
  }
  const sink: Sink = {
    url: `${base}/deliver`,
    pid: sinkProcess.pid as number,
    reset: async () => void (await control(base, '/_bench/reset', 'POST')),
    summary: async () => (await control(base, '/_bench/summary')) as SinkSummary,
    arrivals: async () => (await control(base, '/_bench/arrivals')) as number[],
  };

  return {
    redisUrl: redis.url,
    admin,
    sink,
    spawnChild,
    endChild,
    inspectorUrl(child) {
      const url = inspectors.get(child);
      if (!url) return Promise.reject(new Error(`process ${child.pid} was not started with the inspector`));
      return url;
    },
    async flush() {
      await admin.flushall();
    },
    async stop() {
      await Promise.all([...children].map((c) => endChild(c, 5000)));
      admin.disconnect();
      await redis.stop();
    },
  };
}
