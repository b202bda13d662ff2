// Helpers of the recovery tests: private redis-server processes that a test may kill, and the
// results stream read with the time each entry was appended.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RelayContext } from '../../src/context/relay-context.js';
import { freePort, redisAnswers } from '../../src/redis/embedded-redis.js';
import { waitFor } from './harness.js';

export interface EndedJob {
  jobId: string;
  outcome: string;
  reason: string;
  /** When Redis appended the entry (ms, from its stream id). */
  at: number;
}

/** The results stream's entries with the time Redis appended each. */
export async function endedJobs(ctx: RelayContext): Promise<EndedJob[]> {
  const entries = (await ctx.redis.xrange(ctx.keys.results, '-', '+')) as [string, string[]][];
  return entries.map(([id, f]) => {
    const field = (name: string) => f[f.indexOf(name) + 1] as string;
    return { jobId: field('jobId'), outcome: field('outcome'), reason: field('reason'), at: Number(id.split('-')[0]) };
  });
}

/** How many results entries each job id has. */
export function entriesPerJob(entries: EndedJob[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const e of entries) out.set(e.jobId, (out.get(e.jobId) ?? 0) + 1);
  return out;
}

/** A redis-server the test owns, in a temp dir, that it may kill and start again on the same port and data. */
export interface OwnedRedis {
  url: string;
  port: number;
  dir: string;
  process: ChildProcess;
  /** SIGKILL (or another signal); resolves once the process is gone. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again with the same arguments and data; resolves once it answers. */
  restart(): Promise<void>;
  /** Kills it and removes its dir. */
  remove(): Promise<void>;
}

/** Starts `redis-server` on a free loopback port with `args` (e.g. AOF settings) in a dir of its own. */
export async function startOwnedRedis(args: string[], opts: { port?: number; dir?: string } = {}): Promise<OwnedRedis> {
  const port = opts.port ?? (await freePort());
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'ar-redis-'));
  const url = `redis://127.0.0.1:${port}`;
  const launch = () => spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, ...args], { stdio: 'ignore' });
  const owned: OwnedRedis = {
    url,
    port,
    dir,
    process: launch(),
    async kill(signal = 'SIGKILL') {
      const child = owned.process;
      if (child.exitCode !== null || child.signalCode !== null) return;
      await new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        child.kill(signal);
      });
    },
    async restart() {
      owned.process = launch();
      await waitFor(() => redisAnswers(url, 200), 20_000, `redis-server on ${port} to answer`);
    },
    async remove() {
      await owned.kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await waitFor(() => redisAnswers(url, 200), 20_000, `redis-server on ${port} to answer`);
  return owned;
}

/** AOF with an fsync per write: what was acknowledged survives a SIGKILL. */
export const AOF_ALWAYS = ['--appendonly', 'yes', '--appendfsync', 'always', '--save', ''];
