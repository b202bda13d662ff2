import { describe, expect, it } from 'vitest';
import { createRedisConnection } from '../../src/redis/redis-connection.js';
import type { RedisClient } from '../../src/redis/redis-connection.js';
import { trackRuns, waitFor } from '../support/harness.js';
import { startSentinelSet } from '../support/recovery.js';

const { cleanups } = trackRuns();

/** Connections of one process, each with writes in flight when the master dies. */
const CONNECTIONS = 24;

describe('connections through Redis Sentinel', () => {
  it('every connection of a process is back, on the promoted replica, after the master is killed', async () => {
    const set = await startSentinelSet();
    cleanups.push(() => set.remove());
    const config = {
      REDIS_URL: 'redis://127.0.0.1:6379',
      REDIS_CLUSTER_NODES: undefined,
      REDIS_SENTINELS: set.addresses.split(','),
      REDIS_SENTINEL_MASTER: set.masterName,
    };
    const clients: RedisClient[] = Array.from({ length: CONNECTIONS }, (_, i) => {
      const c = createRedisConnection(config, { name: `sentinel-test-${i}` });
      c.on('error', () => undefined);
      return c;
    });
    cleanups.push(async () => {
      for (const c of clients) c.disconnect();
    });
    await Promise.all(clients.map((c) => c.ping()));

    // Each connection keeps writing through the failover, so that some are reconnecting, some
    // resolving the master and some idle when the sentinels announce the switch.
    let writing = true;
    const writers = clients.map(async (c, i) => {
      let n = 0;
      while (writing) {
        await c.set(`sentinel-test:${i}`, String(n++)).catch(() => undefined);
        await new Promise((r) => setTimeout(r, 5 + (i % 7) * 3));
      }
    });
    await set.master.kill('SIGKILL');
    await waitFor(async () => (await set.masterPorts()).includes(set.replica.port), 30_000, 'the sentinels to promote the replica');
    // The switch is announced; give every connection the time a reconnect takes (retries back
    // off up to 2 s), then stop writing.
    await new Promise((r) => setTimeout(r, 3000));
    writing = false;
    await Promise.all(writers);

    // None ended for good ("Connection is closed."): each answers, and answers as the new master.
    expect(clients.map((c) => c.status).filter((s) => s === 'end')).toEqual([]);
    const roles = await Promise.all(
      clients.map((c) =>
        waitFor(async () => (await c.role().catch(() => []))[0] === 'master', 15_000, 'a connection on the new master').then(
          async () => (c as { stream?: { remotePort?: number } }).stream?.remotePort,
        ),
      ),
    );
    expect(new Set(roles)).toEqual(new Set([set.replica.port]));
  }, 120_000);
});
