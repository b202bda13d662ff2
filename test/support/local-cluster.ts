import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { answeringPid, freePort, redisServerOnPath } from '../../src/redis/embedded-redis.js';

const run = promisify(execFile);

export interface LocalCluster {
  /** `127.0.0.1:<port>` of each master, as REDIS_CLUSTER_NODES takes them. */
  nodes: string[];
  /** The hash slot of a key, as the cluster computes it. */
  keySlot(key: string): Promise<number>;
  /** The master serving a hash slot. */
  masterOf(slot: number): Promise<string>;
  /** Runs commands on one node directly (no cluster routing). */
  onNode<T>(fn: (r: Redis) => Promise<T>, node?: string): Promise<T>;
  stop(): Promise<void>;
}

/**
 * Starts a Redis Cluster of `masters` redis-server processes on free loopback ports, keeping
 * nothing on disk but their cluster config files (in a temporary folder removed by stop()).
 */
export async function startLocalCluster(masters = 3): Promise<LocalCluster> {
  if (!redisServerOnPath()) throw new Error('a local Redis Cluster needs redis-server and redis-cli on the PATH (Debian: redis-server)');
  const dir = mkdtempSync(join(tmpdir(), 'action-relay-cluster-'));
  const children: ChildProcess[] = [];
  const nodes: string[] = [];
  const stop = async () => {
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            c.once('exit', () => resolve());
            c.kill('SIGTERM');
          }),
      ),
    );
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < masters; i++) {
      // The cluster bus port is chosen too: port + 10000 may be taken or beyond 65535.
      const [port, busPort] = [await freePort(), await freePort()];
      const child = spawn(
        'redis-server',
        [
          '--port',
          String(port),
          '--cluster-port',
          String(busPort),
          '--bind',
          '127.0.0.1',
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          join(dir, `nodes-${port}.conf`),
          '--save',
          '',
          '--appendonly',
          'no',
          '--daemonize',
          'no',
          '--dir',
          dir,
        ],
        { stdio: 'ignore' },
      );
      children.push(child);
      nodes.push(`127.0.0.1:${port}`);
    }
    for (const [i, node] of nodes.entries()) {
      // Only the child's own answer counts: a port lost between freePort and the bind may hold
      // somebody else's server, which must never join this cluster.
      const child = children[i] as ChildProcess;
      let up = false;
      for (let tries = 0; tries < 100 && !up && child.exitCode === null; tries++) {
        const pid = await answeringPid(`redis://${node}`, 200);
        if (pid !== null && pid !== child.pid) throw new Error(`another server (pid ${pid}) answers on ${node}`);
        up = pid !== null;
        if (!up) await new Promise((r) => setTimeout(r, 50));
      }
      if (!up) throw new Error(`redis-server did not answer on ${node}`);
    }
    await run('redis-cli', ['--cluster', 'create', ...nodes, '--cluster-replicas', '0', '--cluster-yes']);
    for (const node of nodes) {
      const [host, port] = node.split(':');
      const r = new Redis({ host, port: Number(port), lazyConnect: true });
      await r.connect();
      try {
        for (let i = 0; ; i++) {
          const info = await r.cluster('INFO');
          if (/cluster_state:ok/.test(info)) break;
          if (i > 200) throw new Error(`cluster not ok on ${node}: ${info}`);
          await new Promise((res) => setTimeout(res, 50));
        }
      } finally {
        r.disconnect();
      }
    }
  } catch (err: unknown) {
    await stop();
    throw err;
  }

  const ask = async <T>(fn: (r: Redis) => Promise<T>, node = nodes[0] as string): Promise<T> => {
    const [host, port] = node.split(':');
    const r = new Redis({ host, port: Number(port) });
    try {
      return await fn(r);
    } finally {
      r.disconnect();
    }
  };

  return {
    nodes,
    keySlot: (key) => ask(async (r) => Number(await r.cluster('KEYSLOT', key))),
    async masterOf(slot) {
      const ranges = await ask((r) => r.cluster('SLOTS'));
      const owner = ranges.find(([from, to]) => slot >= from && slot <= to)?.[2];
      if (!owner) throw new Error(`no master serves slot ${slot}`);
      return `${owner[0]}:${owner[1]}`;
    },
    /** Runs a command on one node directly (not through cluster routing). */
    onNode: ask,
    stop,
  };
}
