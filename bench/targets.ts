// What the bench measures, behind one interface: each target owns its worker processes and can
// take jobs while held back (`fill`), let them go and wait until they are all done (`release`),
// or receive jobs at an offered rate (`offer`). Queue targets hold jobs back by pausing the queue.
import { randomUUID } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { createRelayContext, loadConfig, type Config, type RelayContext } from '../src/index.js';
import { scriptArgs, type Lab } from './lab.js';
import { benchAction, buildContext, buildParams, benchClock, type JobContext, type JobParams } from './payload.js';
import { commandsPerDelivery, processesCpuSeconds, redisCommandStats, redisCpuSeconds, type CommandCost } from './proc-stats.js';
import { percentile } from './stats.js';

export type TargetKey = 'bare' | 'undici' | 'pool' | 'global' | 'relay' | 'relayRateLimited' | 'relayTraced';

export interface LatencyFigures {
  offeredPerSec: number;
  jobs: number;
  p50Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
  /** How the latency was taken. */
  source: 'sink' | 'finishedOn';
  /**
   * CPU per job of the worker processes and of Redis, from the first job offered until the last
   * ended (Redis's includes the enqueues). At an offered rate a job rarely shares a fetch, a finish
   * or a write with another, so this is several times the saturation figure.
   */
  workerCpuUs: number | null;
  redisCpuUs: number | null;
  /**
   * Redis commands per job over the same span, the enqueues included: how many round trips each job
   * costs at this rate (a fetch or a finish shared by two jobs counts half) and their server time.
   */
  redisCommands: CommandCost[];
  /** Each run's figures, when these are medians over several. */
  runs?: { p50Ms: number | null; p99Ms: number | null; maxMs: number | null }[];
}

export interface Target {
  key: string;
  label: string;
  /** Whether each job ends in a request to the sink. */
  http: boolean;
  /** Worker processes whose CPU and memory are measured. */
  pids(): number[];
  /**
   * Adds `n` jobs of a `bytes`-long payload, held back until `release`. `fast` (big backlogs):
   * the first 1,000 are enqueued with addBulk, the rest are server-side copies of them.
   */
  fill(n: number, bytes: number, opts?: { fast?: boolean }): Promise<void>;
  /** Lets the filled jobs go; resolves when `n` more jobs have ended. */
  release(n: number, timeoutMs: number): Promise<void>;
  /** Enqueues `ratePerSec` jobs per second for `seconds`, waits until they are done, and reports latency. */
  offer?(ratePerSec: number, seconds: number, bytes: number): Promise<LatencyFigures>;
  /** The queue, for the burst and backlog sections. */
  queue?: Queue;
  /** Inspector URLs of the worker processes (started with `inspect`). */
  inspectorUrls(): Promise<string[]>;
  /** Ends the worker processes and keeps the rest (queue, Redis connections) for inspection. */
  stopWorkers(): Promise<void>;
  /** Ends the worker processes and closes everything else. */
  stop(): Promise<void>;
}

export interface TargetOptions {
  /** Worker processes. @defaultValue 1 */
  processes?: number;
  /** Jobs in flight per worker process. @defaultValue 64 */
  concurrency?: number;
  /** Extra node arguments of each worker process. */
  nodeArgs?: string[];
  /** Start the worker processes with the inspector on a loopback port (for CPU profiles). */
  inspect?: boolean;
  /** Distinct actions the jobs are spread over (action-relay only). @defaultValue 1 */
  actions?: number;
  /** LOG_LEVEL of action-relay workers. @defaultValue info */
  logLevel?: string;
  rateLimit?: { max: number; perMs: number };
  /** The action captures the sink's `id` from each answer (action-relay only). @defaultValue false */
  capture?: boolean;
  /** Jobs get one of this many orderingKeys, job i the key i % n (action-relay only). */
  orderingKeys?: number;
  /** Trace every attempt, exported over OTLP (http/protobuf) to the sink (action-relay only). @defaultValue false */
  tracing?: boolean;
}

export interface JobSpec {
  i: number;
  params: JobParams;
  context: JobContext;
}

/** How one queue target enqueues and runs its workers. */
interface QueueDriver {
  queue: Queue;
  /** At most 1000 jobs, each its own BullMQ job. */
  enqueue(batch: JobSpec[]): Promise<void>;
  /**
   * One job, as a journey engine sends each profile's step: what an offered load is made of. (A
   * batch of two or three, each tick's due jobs, cost more than the jobs: BullMQ's addBulk builds
   * an ioredis pipeline per call, some 15 KB of objects, and the bench's own garbage collector set
   * much of the tail it measured; docs/benchmarks.md.)
   */
  enqueueOne(job: JobSpec): Promise<void>;
  /** Same job shape, without validation. */
  enqueueFast(batch: JobSpec[]): Promise<void>;
  spawn(): ChildProcess[];
  close(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const BATCH = 1000;
/** Enqueue calls in flight while filling: enough to keep Redis busy. */
const FILL_LANES = 4;

let jobCounter = 0;

export async function fillJobs(n: number, bytes: number, add: (batch: JobSpec[]) => Promise<void>): Promise<void> {
  let made = 0;
  const template = buildParams(0, bytes);
  const lane = async () => {
    while (made < n) {
      const size = Math.min(BATCH, n - made);
      made += size;
      const batch: JobSpec[] = [];
      for (let k = 0; k < size; k++) {
        const i = jobCounter++;
        // Same size for every job: only the ids change (they have the same width).
        const params = { ...template, t: benchClock(), profileId: `p-${String(i % 1e9).padStart(9, '0')}` };
        batch.push({ i, params, context: buildContext(i % 1e9) });
      }
      await add(batch);
    }
  };
  await Promise.all(Array.from({ length: FILL_LANES }, lane));
}

/*
 * Copies the newest job of the queue's waiting (or paused) list under new ids, pushed the way
 * BullMQ pushes a new job: a backlog of a million in seconds rather than minutes of addBulk.
 * The copies hold the same fields as the job BullMQ stored (name, data, opts, timestamp...).
 * KEYS[1] queue meta, KEYS[2] paused list, KEYS[3] wait list
 * ARGV[1] job key prefix, ARGV[2] id prefix, ARGV[3] first index, ARGV[4] last index
 * Returns the number of jobs added. Standalone Redis only (job keys are built here).
 */
const COPY_JOBS = `
local target = KEYS[3]
if redis.call('HEXISTS', KEYS[1], 'paused') == 1 then target = KEYS[2] end
local templateId = redis.call('LINDEX', target, 0)
if not templateId then return redis.error_reply('no job to copy') end
local fields = redis.call('HGETALL', ARGV[1] .. templateId)
local first, last = tonumber(ARGV[3]), tonumber(ARGV[4])
for i = first, last do
  local id = ARGV[2] .. i
  redis.call('HSET', ARGV[1] .. id, unpack(fields))
  redis.call('LPUSH', target, id)
end
return last - first + 1
`;

async function copyJobs(client: Redis, queue: Queue, n: number): Promise<void> {
  const idPrefix = `copy-${randomUUID().slice(0, 8)}-`;
  for (let first = 0; first < n; first += 20_000) {
    const last = Math.min(n, first + 20_000) - 1;
    await client.eval(
      COPY_JOBS,
      3,
      queue.toKey('meta'),
      queue.toKey('paused'),
      queue.toKey('wait'),
      queue.toKey(''),
      idPrefix,
      first,
      last,
    );
  }
}

async function waitUntil(what: string, timeoutMs: number, check: () => Promise<boolean>, pollMs = 10): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(pollMs);
  }
}

function assertAlive(children: ChildProcess[], label: string): void {
  const dead = children.find((c) => c.exitCode !== null || c.signalCode !== null);
  if (dead) throw new Error(`${label}: worker process ${dead.pid} exited (${dead.exitCode ?? dead.signalCode})`);
}

async function startQueueTarget(
  lab: Lab,
  key: string,
  label: string,
  http: boolean,
  driver: QueueDriver,
  processes: number,
): Promise<Target> {
  const { queue } = driver;
  await queue.pause();
  const children = driver.spawn();
  await waitUntil(
    `${label}: ${processes} worker(s) connected`,
    60_000,
    async () => {
      assertAlive(children, label);
      return (await queue.getWorkersCount()) >= processes;
    },
    50,
  );
  const ended = async () => (await queue.getCompletedCount()) + (await queue.getFailedCount());
  let closed = false;

  const target: Target = {
    key,
    label,
    http,
    queue,
    pids: () => children.map((c) => c.pid as number),
    inspectorUrls: () => Promise.all(children.map((c) => lab.inspectorUrl(c))),
    async fill(n, bytes, opts = {}) {
      if (!opts.fast) return fillJobs(n, bytes, (b) => driver.enqueue(b));
      const seeded = Math.min(n, BATCH);
      await fillJobs(seeded, bytes, (b) => driver.enqueueFast(b));
      await copyJobs(lab.admin, queue, n - seeded);
    },
    async release(n, timeoutMs) {
      const base = await ended();
      await queue.resume();
      await waitUntil(`${label}: ${n} jobs done`, timeoutMs, async () => {
        assertAlive(children, label);
        return (await ended()) - base >= n;
      });
      await queue.pause();
    },
    async offer(ratePerSec, seconds, bytes) {
      const base = await ended();
      await lab.sink.reset();
      const pids = target.pids();
      const cpu0 = processesCpuSeconds(pids);
      const redis0 = await redisCpuSeconds(lab.admin);
      const commands0 = await redisCommandStats(lab.admin);
      await queue.resume();
      const template = buildParams(0, bytes);
      const start = performance.now();
      let sent = 0;
      while (performance.now() - start < seconds * 1000) {
        const due = Math.floor(((performance.now() - start) / 1000) * ratePerSec) - sent;
        if (due > 0) {
          const batch: JobSpec[] = [];
          for (let k = 0; k < due; k++) {
            const i = jobCounter++;
            batch.push({ i, params: { ...template, t: benchClock() }, context: buildContext(i % 1e9) });
          }
          sent += due;
          await Promise.all(batch.map((job) => driver.enqueueOne(job)));
        }
        await sleep(2);
      }
      await waitUntil(`${label}: ${sent} offered jobs done`, 60_000, async () => (await ended()) - base >= sent, 20);
      // What both sources of latency share: the load offered and its cost per job.
      const cost = {
        offeredPerSec: ratePerSec,
        jobs: sent,
        workerCpuUs: sent > 0 ? ((processesCpuSeconds(pids) - cpu0) / sent) * 1e6 : null,
        redisCpuUs: sent > 0 ? (((await redisCpuSeconds(lab.admin)) - redis0) / sent) * 1e6 : null,
        redisCommands: sent > 0 ? commandsPerDelivery(commands0, await redisCommandStats(lab.admin), sent) : [],
      };
      await queue.pause();
      if (http) {
        const { p50, p99, max } = (await lab.sink.summary()).latency;
        return { ...cost, p50Ms: p50, p99Ms: p99, maxMs: max, source: 'sink' };
      }
      // No request to time: enqueue to the end of the (empty) processor, as BullMQ records them.
      const jobs = await queue.getJobs(['completed'], 0, sent - 1);
      const lat = jobs.map((j) => (j.finishedOn ?? 0) - j.timestamp).sort((a, b) => a - b);
      return {
        ...cost,
        p50Ms: percentile(lat, 0.5),
        p99Ms: percentile(lat, 0.99),
        maxMs: lat[lat.length - 1] ?? null,
        source: 'finishedOn',
      };
    },
    async stopWorkers() {
      await Promise.all(children.map((c) => lab.endChild(c)));
    },
    async stop() {
      if (closed) return;
      closed = true;
      await target.stopWorkers();
      await driver.close();
    },
  };
  return target;
}

/**
 * A queue prefix of the same length for every target. Redis key names travel with every command
 * (a delivery names some 30 keys), so a longer prefix alone costs a target measurable worker CPU:
 * the variant's name in it cost the rate-limited one ~240 B more per delivery than the relay.
 */
function benchPrefix(): string {
  return `bench-${randomUUID().slice(0, 8)}`;
}

/** A bare BullMQ queue worked by one of the bench's own worker scripts. */
async function scriptTarget(lab: Lab, key: TargetKey, label: string, script: string, opts: TargetOptions): Promise<Target> {
  const prefix = benchPrefix();
  const connection = new Redis(lab.redisUrl, { maxRetriesPerRequest: null });
  const queue = new Queue('deliveries', { connection, prefix });
  const add = async (batch: JobSpec[]) => {
    await queue.addBulk(batch.map((j) => ({ name: 'deliver', data: { params: j.params, context: j.context } })));
  };
  const driver: QueueDriver = {
    queue,
    enqueue: add,
    enqueueFast: add,
    async enqueueOne(j) {
      await queue.add('deliver', { params: j.params, context: j.context });
    },
    spawn: () =>
      Array.from({ length: opts.processes ?? 1 }, () =>
        lab.spawnChild(
          scriptArgs(script),
          {
            REDIS_URL: lab.redisUrl,
            BENCH_PREFIX: prefix,
            BENCH_QUEUE: 'deliveries',
            SINK_URL: lab.sink.url,
            CONCURRENCY: String(opts.concurrency ?? 64),
          },
          { nodeArgs: opts.nodeArgs ?? [], inspect: opts.inspect ?? false },
        ),
      ),
    async close() {
      await queue.close();
      connection.disconnect();
    },
  };
  return startQueueTarget(lab, key, label, key !== 'bare', driver, opts.processes ?? 1);
}

/** The bench's own action-relay settings on the private Redis; the sink is on loopback. */
export function relayConfig(lab: Lab, prefix: string): Config {
  return loadConfig({ REDIS_URL: lab.redisUrl, ACTION_RELAY_PREFIX: prefix, LOG_LEVEL: 'silent', EGRESS_ALLOW_PRIVATE: 'true' });
}

/** action-relay's real worker process(es), jobs enqueued through its producer. */
export async function relayTarget(
  lab: Lab,
  key: string,
  label: string,
  opts: TargetOptions = {},
): Promise<Target & { ctx: RelayContext; actionIds: string[] }> {
  const prefix = benchPrefix();
  const ctx = await createRelayContext(relayConfig(lab, prefix), { processMetrics: false });
  const count = opts.actions ?? 1;
  const actionIds = count === 1 ? ['bench'] : Array.from({ length: count }, (_, i) => `bench_${String(i).padStart(4, '0')}`);
  for (const id of actionIds) await ctx.store.put(benchAction(id, lab.sink.url, opts.rateLimit, opts.capture));
  const actionOf = (i: number) => actionIds[i % actionIds.length] as string;
  const keys = opts.orderingKeys;
  const ordering = (i: number) => (keys ? { orderingKey: `key-${i % keys}` } : {});
  const driver: QueueDriver = {
    queue: ctx.queue,
    async enqueue(batch) {
      const results = await ctx.producer.enqueueMany(
        batch.map((j) => ({ actionId: actionOf(j.i), params: j.params, context: j.context, ...ordering(j.i) })),
      );
      const bad = results.find((r) => 'error' in r);
      if (bad) throw new Error(`${label}: the producer refused a job: ${JSON.stringify(bad)}`);
    },
    async enqueueOne(j) {
      // A refusal throws the producer's ValidationError, which names the field.
      await ctx.producer.enqueue({ actionId: actionOf(j.i), params: j.params, context: j.context, ...ordering(j.i) });
    },
    async enqueueFast(batch) {
      // The shape the producer gives a job (name = action id, data = params + context, a UUID job id).
      await ctx.queue.addBulk(
        batch.map((j) => ({ name: actionOf(j.i), data: { params: j.params, context: j.context }, opts: { jobId: randomUUID() } })),
      );
    },
    spawn: () =>
      Array.from({ length: opts.processes ?? 1 }, () =>
        lab.spawnChild(
          [...scriptArgs('action-relay'), 'worker'],
          {
            REDIS_URL: lab.redisUrl,
            ACTION_RELAY_PREFIX: prefix,
            METRICS_PORT: '0',
            WORKER_CONCURRENCY: String(opts.concurrency ?? 64),
            // The sink is on loopback, which the egress guard refuses by default.
            EGRESS_ALLOW_PRIVATE: 'true',
            LOG_LEVEL: opts.logLevel ?? 'info',
            // The sink answers OTLP exports without counting them as deliveries.
            ...(opts.tracing ? { OTEL_EXPORTER_OTLP_ENDPOINT: lab.sink.url, OTEL_SERVICE_NAME: 'action-relay-bench' } : {}),
          },
          { nodeArgs: opts.nodeArgs ?? [], inspect: opts.inspect ?? false },
        ),
      ),
    close: () => ctx.close(),
  };
  const target = await startQueueTarget(lab, key, label, true, driver, opts.processes ?? 1);
  return Object.assign(target, { ctx, actionIds });
}

/** Raw undici Pool requests to the sink from a process of their own: no queue at all. */
async function undiciTarget(lab: Lab, opts: TargetOptions): Promise<Target> {
  const child = lab.spawnChild(
    scriptArgs('raw-undici'),
    { SINK_URL: lab.sink.url, CONCURRENCY: String(opts.concurrency ?? 64) },
    { ipc: true, nodeArgs: opts.nodeArgs ?? [], inspect: opts.inspect ?? false },
  );
  const message = () =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const onExit = (code: number | null) => reject(new Error(`raw undici process exited (${code})`));
      child.once('exit', onExit);
      child.once('message', (m) => {
        child.off('exit', onExit);
        resolve(m as Record<string, unknown>);
      });
    });
  await message();
  let pending = { n: 0, bytes: 0 };
  return {
    key: 'undici',
    label: 'raw undici Pool (no queue)',
    http: true,
    pids: () => [child.pid as number],
    inspectorUrls: async () => [await lab.inspectorUrl(child)],
    async fill(n, bytes) {
      pending = { n, bytes };
    },
    async release(n) {
      const answer = message();
      child.send({ n, bytes: pending.bytes });
      const r = await answer;
      if (r.failed) throw new Error(`raw undici: ${String(r.failed)} requests failed`);
    },
    stopWorkers: () => lab.endChild(child),
    stop: () => lab.endChild(child),
  };
}

export const TARGET_LABELS: Record<TargetKey, string> = {
  bare: 'bare BullMQ, empty processor',
  undici: 'raw undici Pool (no queue)',
  pool: 'baseline: BullMQ + undici Pool (30 lines)',
  global: 'baseline: BullMQ + undici global request',
  relay: 'action-relay worker',
  relayRateLimited: 'action-relay, every feature on (non-binding rate limit, response capture)',
  relayTraced: 'action-relay, tracing on (OTLP to loopback)',
};

/** Non-binding: far above what one machine can send. */
export const NON_BINDING_LIMIT = { max: 1_000_000, perMs: 1000 };

export async function startTarget(lab: Lab, key: TargetKey, opts: TargetOptions = {}): Promise<Target> {
  const label = TARGET_LABELS[key];
  switch (key) {
    case 'bare':
      return scriptTarget(lab, key, label, 'bare-worker', opts);
    case 'pool':
      return scriptTarget(lab, key, label, 'baseline-pool', opts);
    case 'global':
      return scriptTarget(lab, key, label, 'baseline-global', opts);
    case 'undici':
      return undiciTarget(lab, opts);
    case 'relay':
      return relayTarget(lab, key, label, opts);
    case 'relayRateLimited':
      return relayTarget(lab, key, label, { ...opts, rateLimit: NON_BINDING_LIMIT, capture: true });
    case 'relayTraced':
      return relayTarget(lab, key, label, { ...opts, tracing: true });
  }
}
