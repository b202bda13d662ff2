import { randomUUID } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { afterAll, afterEach, inject } from 'vitest';
import { Redis, type Cluster } from 'ioredis';
import { loadConfig, type Config } from '../../src/config/config.js';
import { createRelayContext, type RelayContext } from '../../src/context/relay-context.js';
import { createLogger } from '../../src/logger.js';
import type { EgressLookup } from '../../src/delivery/egress-guard.js';
import { createRedisConnection } from '../../src/redis/redis-connection.js';

export interface ReceivedRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
  at: number;
}

export interface Receiver {
  url: string;
  requests: ReceivedRequest[];
  /** Decides each answer; the default answers 200 {}. */
  handler: (req: ReceivedRequest, res: ServerResponse) => void;
  close(): Promise<void>;
}

/** A real HTTP server on loopback that records every request. */
export async function startReceiver(): Promise<Receiver> {
  const requests: ReceivedRequest[] = [];
  const receiver: Receiver = {
    url: '',
    requests,
    handler: (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'),
    close: async () => undefined,
  };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const r = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
        at: Date.now(),
      };
      requests.push(r);
      receiver.handler(r, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const addr = server.address();
  receiver.url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  receiver.close = () =>
    new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return receiver;
}

/** The receivers of tests listen on loopback, which the egress guard refuses unless allowed. */
export const LOOPBACK_ALLOWED = '127.0.0.1,localhost';

/** A config on the test Redis with a prefix of its own; loopback destinations allowed (override with EGRESS_ALLOW_HOSTS: ''). */
export function testConfig(overrides: Record<string, string> = {}): Config {
  return loadConfig({
    REDIS_URL: inject('redisUrl'),
    ACTION_RELAY_PREFIX: `test-${randomUUID().slice(0, 8)}`,
    METRICS_PORT: '0',
    LOG_LEVEL: 'silent',
    EGRESS_ALLOW_HOSTS: LOOPBACK_ALLOWED,
    ...overrides,
  });
}

/** `lookup` answers the egress guard's DNS questions, so that no DNS server is asked. */
export async function testContext(
  config: Config,
  env: NodeJS.ProcessEnv = process.env,
  logLines?: string[],
  lookup?: EgressLookup,
): Promise<RelayContext> {
  const logger = logLines ? createLogger('debug', { write: (line: string) => void logLines.push(line) }) : createLogger(config.LOG_LEVEL);
  return createRelayContext(config, { logger, watchActions: true, processMetrics: false, env, ...(lookup ? { lookup } : {}) });
}

/**
 * Removes every key under this test's prefix, and nothing else: `{prefix}:...` and the tags derived
 * from it (`{prefix:p0}:...`, `{prefix:rl:<key>}`...). On a Redis Cluster, each master is scanned.
 */
export async function removePrefixKeys(config: Config): Promise<void> {
  const pattern = `{${config.ACTION_RELAY_PREFIX}[:}]*`;
  const clusterNodes = config.REDIS_CLUSTER_NODES ?? [];
  const cluster = clusterNodes.length > 0 ? (createRedisConnection(config) as Cluster) : undefined;
  if (cluster && cluster.status !== 'ready') await new Promise((resolve) => cluster.once('ready', resolve));
  const nodes: Redis[] = cluster ? cluster.nodes('master') : [new Redis(config.REDIS_URL)];
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      // One key per command: on a cluster node, keys of different slots cannot share a DEL.
      if (keys.length > 0) await Promise.all(keys.map((k) => node.unlink(k)));
    } while (cursor !== '0');
  }
  if (cluster) await cluster.quit();
  else await nodes[0]?.quit();
}

export async function waitFor<T>(
  fn: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  timeoutMs = 10_000,
  what = 'condition',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Reads the whole results stream as a list of field maps. */
export async function readResults(ctx: RelayContext): Promise<Record<string, string>[]> {
  const entries = (await ctx.redis.xrange(ctx.keys.results, '-', '+')) as [string, string[]][];
  return entries.map(([, f]) => {
    const o: Record<string, string> = {};
    for (let i = 0; i < f.length; i += 2) o[f[i] as string] = f[i + 1] as string;
    return o;
  });
}

/** An in-process delivery worker on its own connections, as a separate process would have. */
export async function startTestWorker(config: Config, env: NodeJS.ProcessEnv = process.env, logLines?: string[], lookup?: EgressLookup) {
  const { createDeliveryWorker } = await import('../../src/delivery/delivery-worker.js');
  const { createHttpSender } = await import('../../src/delivery/http-sender.js');
  const { createContextTokens } = await import('../../src/context/relay-context.js');
  const ctx = await testContext(config, env, logLines, lookup);
  const sender = createHttpSender({ guard: ctx.egress });
  const delivery = createDeliveryWorker({
    connection: ctx.bullConnection,
    keys: ctx.keys,
    store: ctx.store,
    sender,
    secrets: ctx.secrets,
    tokens: createContextTokens(ctx, sender),
    outcomes: ctx.outcomes,
    rateLimiter: (await import('../../src/delivery/rate-limiter.js')).createRateLimiter(ctx.redis, ctx.keys),
    circuitBreaker: (await import('../../src/delivery/circuit-breaker.js')).createCircuitBreaker(ctx.redis, ctx.keys),
    metrics: ctx.metrics,
    logger: ctx.logger,
    concurrency: 8,
    maxResponseBytes: 64 * 1024,
  });
  return {
    ctx,
    delivery,
    async stop() {
      await delivery.close();
      await ctx.close();
    },
  };
}

/**
 * How long to allow for a spawned worker's start, in a wait whose clock starts at the spawn: a cold
 * start (tsx compiles the worker) takes about 2 s here, and over 30 s was seen on a loaded machine.
 * Only a failing wait lasts that long; the behaviour a test checks keeps its own, shorter bound. A
 * test that waits so gets 60 s more than it would otherwise (its timeout, e.g. 90_000 for 30_000).
 */
export const WORKER_START_MS = 60_000;

/** Starts `action-relay worker` as a real process on this test's prefix; it is added to `children`. */
export function spawnWorker(config: Config, children: ChildProcess[], extraEnv: Record<string, string> = {}): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', 'workers/action-relay.ts', 'worker'], {
    env: {
      ...process.env,
      REDIS_URL: config.REDIS_URL,
      ACTION_RELAY_PREFIX: config.ACTION_RELAY_PREFIX,
      METRICS_PORT: '0',
      LOG_LEVEL: 'warn',
      // Requests of tests are short; locks keep their default (10 s, taken over within about 15 s):
      // a shorter one is lost by a worker starved of CPU on a busy machine, and its jobs sent twice.
      REQUEST_TIMEOUT_CAP_MS: '2000',
      EGRESS_ALLOW_HOSTS: config.EGRESS_ALLOW_HOSTS?.join(',') ?? '',
      EGRESS_ALLOW_PRIVATE: String(config.EGRESS_ALLOW_PRIVATE),
      ...extraEnv,
    },
    stdio: ['ignore', process.env.ACTION_RELAY_TEST_WORKER_LOGS ? 'pipe' : 'ignore', 'inherit'],
  });
  // Diagnostics: ACTION_RELAY_TEST_WORKER_LOGS=<dir> keeps each spawned worker's log lines there.
  const logDir = process.env.ACTION_RELAY_TEST_WORKER_LOGS;
  if (logDir && child.stdout) child.stdout.pipe(createWriteStream(join(logDir, `worker-${process.pid}-${child.pid}.log`)));
  children.push(child);
  return child;
}

/** Sends a signal and waits for the process to end. */
export function kill(child: ChildProcess, signal: NodeJS.Signals): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.kill(signal);
  });
}

/** A receiver, a config with its own prefix and a context; `cleanups` gets what undoes them. */
export async function setupRun(cleanups: (() => Promise<void>)[], overrides: Record<string, string> = {}) {
  const receiver = await startReceiver();
  const config = testConfig(overrides);
  const ctx = await testContext(config);
  cleanups.push(async () => {
    await ctx.close();
    await receiver.close();
    await removePrefixKeys(config);
  });
  return { receiver, config, ctx };
}

/**
 * A test file's bookkeeping: worker processes pushed to `children` are killed after each test,
 * and `cleanups` run after the file, the last registered first.
 */
export function trackRuns(): { children: ChildProcess[]; cleanups: (() => Promise<void>)[] } {
  const children: ChildProcess[] = [];
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    await Promise.all(children.splice(0).map((c) => kill(c, 'SIGKILL')));
  });
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });
  return { children, cleanups };
}
