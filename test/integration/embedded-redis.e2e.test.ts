import { createServer, type Server, type Socket } from 'node:net';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort, redisAnswers, redisServerOnPath, startPrivateRedis, type EmbeddedRedis } from '../../src/redis/embedded-redis.js';
import { startOwnedRedis } from '../support/recovery.js';

// The private Redis that `npm run demo` and the tests start when none answers. Its port is picked
// free and then handed to redis-server, so another process can take it in between: these tests
// hand it a taken port on purpose and check that the start moves on instead of failing or, worse,
// returning a URL where somebody else's server answers.

async function pidAt(url: string): Promise<number> {
  const client = new Redis(url, { maxRetriesPerRequest: 0, retryStrategy: () => null });
  try {
    return Number(/^process_id:(\d+)/m.exec(await client.info('server'))?.[1]);
  } finally {
    client.disconnect();
  }
}

const started: EmbeddedRedis[] = [];
const listeners: Server[] = [];
const sockets: Socket[] = [];
afterEach(async () => {
  await Promise.all(started.splice(0).map((r) => r.stop()));
  for (const socket of sockets.splice(0)) socket.destroy();
  await Promise.all(listeners.splice(0).map((s) => new Promise((r) => s.close(r))));
});

async function start(pickPort?: () => Promise<number>): Promise<EmbeddedRedis> {
  const redis = await startPrivateRedis([], pickPort ? { pickPort } : {});
  started.push(redis);
  return redis;
}

/** The given ports first, then free ones; records every port handed out. */
function portsFrom(first: number[]): { pickPort: () => Promise<number>; picked: number[] } {
  const queue = [...first];
  const picked: number[] = [];
  return {
    picked,
    pickPort: async () => {
      const port = queue.shift() ?? (await freePort());
      picked.push(port);
      return port;
    },
  };
}

describe.runIf(redisServerOnPath())('private Redis', () => {
  it('answers on its URL from its own process, and is gone after stop', async () => {
    const redis = await startPrivateRedis();
    expect(await pidAt(redis.url)).toBe(redis.process?.pid);
    await redis.stop();
    expect(await redisAnswers(redis.url, 300)).toBe(false);
    await redis.stop(); // a second stop does not wait for an exit that already came
  });

  it('moves to another port when its port is held by a listener that is not Redis', async () => {
    const squatter = createServer((socket) => sockets.push(socket)); // accepts, never answers
    listeners.push(squatter);
    await new Promise<void>((r) => squatter.listen(0, '127.0.0.1', r));
    const taken = (squatter.address() as { port: number }).port;
    const ports = portsFrom([taken]);
    const redis = await start(ports.pickPort);
    expect(ports.picked[0]).toBe(taken);
    expect(redis.url).not.toContain(`:${taken}`);
    expect(await pidAt(redis.url)).toBe(redis.process?.pid);
  });

  it('never returns a URL where another Redis answers', async () => {
    const other = await start();
    const otherPort = Number(new URL(other.url).port);
    const ports = portsFrom([otherPort]);
    const redis = await start(ports.pickPort);
    expect(ports.picked.length).toBeGreaterThanOrEqual(2);
    expect(redis.url).not.toBe(other.url);
    expect(await pidAt(redis.url)).toBe(redis.process?.pid);
    expect(await pidAt(other.url)).toBe(other.process?.pid); // the other server was left alone
  });

  it('gives up with the reason after three lost races', async () => {
    const other = await start();
    const otherPort = Number(new URL(other.url).port);
    const ports = portsFrom([otherPort, otherPort, otherPort]);
    await expect(startPrivateRedis([], { pickPort: ports.pickPort })).rejects.toThrow(/did not start after 3 attempts: .*127\.0\.0\.1:\d+/);
    expect(ports.picked).toEqual([otherPort, otherPort, otherPort]);
    expect(await pidAt(other.url)).toBe(other.process?.pid);
  });

  it("the recovery tests' own redis-server is never somebody else's either", async () => {
    const other = await start();
    const otherPort = Number(new URL(other.url).port);
    await expect(startOwnedRedis([], { port: otherPort })).rejects.toThrow(/another server \(pid \d+\) answers on \d+/);
    expect(await pidAt(other.url)).toBe(other.process?.pid);
    const owned = await startOwnedRedis([]);
    try {
      expect(await pidAt(owned.url)).toBe(owned.process.pid);
    } finally {
      await owned.remove();
    }
  });
});
