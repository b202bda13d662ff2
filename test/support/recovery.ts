// Helpers of the recovery tests: private redis-server processes that a test may kill, and the
// results stream read with the time each entry was appended.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import type { RelayContext } from '../../src/context/relay-context.js';
import { answeringPid, freePort } from '../../src/redis/embedded-redis.js';
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

/**
 * Starts `redis-server` on a free loopback port with `args` (e.g. AOF settings) in a dir of its own;
 * `command` replaces the usual arguments (a sentinel's config file and `--sentinel`).
 *
 * Only the child's own answer counts (INFO's process id): a port taken by another process between
 * `freePort` and the bind must never hand the test somebody else's server. A port the helper chose
 * itself is then chosen again, up to three times.
 */
export async function startOwnedRedis(args: string[], opts: { port?: number; dir?: string; command?: string[] } = {}): Promise<OwnedRedis> {
  for (let attempt = 1; ; attempt++) {
    const port = opts.port ?? (await freePort());
    const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'ar-redis-'));
    const argv = opts.command ?? ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, ...args];
    const owned = ownedRedis(port, dir, () => spawn('redis-server', argv, { stdio: 'ignore' }));
    try {
      await owned.answered;
      return owned;
    } catch (err) {
      await owned.remove();
      if (opts.port !== undefined || attempt >= 3) throw err;
    }
  }
}

const exited = (child: ChildProcess) => child.exitCode !== null || child.signalCode !== null;

function ownedRedis(port: number, dir: string, launch: () => ChildProcess): OwnedRedis & { answered: Promise<void> } {
  const url = `redis://127.0.0.1:${port}`;
  const ownAnswer = async (child: ChildProcess) => {
    const what = `redis-server (pid ${child.pid}) on ${port} to answer`;
    await waitFor(
      async () => {
        if (exited(child)) throw new Error(`redis-server exited before answering on ${port}`);
        const pid = await answeringPid(url, 200);
        if (pid !== null && pid !== child.pid) throw new Error(`another server (pid ${pid}) answers on ${port}`);
        return pid !== null;
      },
      20_000,
      what,
    );
  };
  const owned = {
    url,
    port,
    dir,
    process: launch(),
    answered: Promise.resolve(),
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      const child = owned.process;
      if (exited(child)) return;
      await new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        child.kill(signal);
      });
    },
    async restart() {
      owned.process = launch();
      await ownAnswer(owned.process);
    },
    async remove() {
      await owned.kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  owned.answered = ownAnswer(owned.process);
  owned.answered.catch(() => undefined); // awaited by the caller; never an unhandled rejection
  return owned;
}

/** AOF with an fsync per write: what was acknowledged survives a SIGKILL. */
export const AOF_ALWAYS = ['--appendonly', 'yes', '--appendfsync', 'always', '--save', ''];

/** One master, one replica and three sentinels on loopback, all in one temp dir. */
export interface SentinelSet {
  master: OwnedRedis;
  replica: OwnedRedis;
  sentinels: OwnedRedis[];
  /** `host:port` of each sentinel, as REDIS_SENTINELS takes them. */
  addresses: string;
  masterName: string;
  /** The port each sentinel names as master now (0 for one that does not answer). */
  masterPorts(): Promise<number[]>;
  remove(): Promise<void>;
}

const sentinelQuery = async (url: string, ...args: string[]) => {
  const client = new Redis(url, { maxRetriesPerRequest: 1, lazyConnect: true });
  try {
    await client.connect();
    return (await client.call('SENTINEL', ...args)) as unknown;
  } finally {
    client.disconnect();
  }
};

/**
 * Starts the set from the `redis-server` binary (`--sentinel` for the sentinels), and waits until
 * the replica is in sync and every sentinel knows the replica and the other two.
 */
export async function startSentinelSet(masterName = 'mymaster'): Promise<SentinelSet> {
  const noPersistence = ['--save', '', '--appendonly', 'no'];
  const master = await startOwnedRedis(noPersistence);
  const replica = await startOwnedRedis([...noPersistence, '--replicaof', '127.0.0.1', String(master.port)]);
  const replicaClient = new Redis(replica.url);
  await waitFor(async () => /master_link_status:up/.test(await replicaClient.info('replication')), 20_000, 'the replica in sync');
  replicaClient.disconnect();
  const sentinels: OwnedRedis[] = [];
  for (let i = 0; i < 3; i++) {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'ar-sentinel-'));
    const conf = join(dir, 'sentinel.conf');
    writeFileSync(
      conf,
      [
        `port ${port}`,
        'bind 127.0.0.1',
        `dir ${dir}`,
        `sentinel monitor ${masterName} 127.0.0.1 ${master.port} 2`,
        `sentinel down-after-milliseconds ${masterName} 1000`,
        `sentinel failover-timeout ${masterName} 10000`,
        `sentinel parallel-syncs ${masterName} 1`,
        '',
      ].join('\n'),
    );
    sentinels.push(await startOwnedRedis([], { port, dir, command: [conf, '--sentinel'] }));
  }
  for (const s of sentinels) {
    await waitFor(
      async () => {
        const replicas = (await sentinelQuery(s.url, 'REPLICAS', masterName).catch(() => [])) as unknown[];
        const others = (await sentinelQuery(s.url, 'SENTINELS', masterName).catch(() => [])) as unknown[];
        return replicas.length === 1 && others.length === 2;
      },
      30_000,
      'each sentinel to know the replica and the other sentinels',
    );
  }
  return {
    master,
    replica,
    sentinels,
    masterName,
    addresses: sentinels.map((s) => `127.0.0.1:${s.port}`).join(','),
    async masterPorts() {
      return Promise.all(
        sentinels.map((s) =>
          sentinelQuery(s.url, 'GET-MASTER-ADDR-BY-NAME', masterName).then(
            (addr) => Number((addr as [string, string])[1]),
            () => 0,
          ),
        ),
      );
    },
    async remove() {
      for (const s of sentinels) await s.remove();
      await replica.remove();
      await master.remove();
    },
  };
}
