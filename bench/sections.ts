// The bench's sections. Each starts the targets it needs on the shared lab, measures, stops them
// and empties the private Redis, so sections can run alone or in any order.
import { randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { createRelayContext } from '../src/index.js';
import type { Lab } from './lab.js';
import { measureDrain, type DrainFigures } from './measure.js';
import { medianCommands, redisUsedMemory } from './proc-stats.js';
import { benchAction, benchClock } from './payload.js';
import { maxInWindow, median } from './stats.js';
import {
  fillJobs,
  relayConfig,
  relayTarget,
  startTarget,
  type JobSpec,
  type LatencyFigures,
  type Target,
  type TargetKey,
} from './targets.js';
import { compareProfiles, summarize as summarizeCpuProfile, type CpuProfile, type ProfileSummary } from './profile-summary.js';
import { connectProfiler } from './inspector-profiler.js';

export interface Sizes {
  /** Measured runs per figure; the median is reported. */
  runs: number;
  /** Jobs each target delivers before it is measured (JIT, connections, caches). */
  warmup: number;
  /** Jobs per saturation run. */
  jobs: number;
  /** Seconds of offered load at `latencyRate` jobs/s, per run. */
  latencySeconds: number;
  latencyRate: number;
  /** Waiting jobs per memory step. */
  memoryJobs: number;
  /** Jobs per run in the growth section. */
  growthJobs: number;
  /** Jobs per run with a 50 KB payload. */
  bigPayloadJobs: number;
  backlogSmall: number;
  backlogBig: number;
  /** Jobs timed from the front of each backlog. */
  backlogDrain: number;
  burstJobs: number;
  burstWindowS: number;
  burstRate: number;
  /** Jobs delivered under the profiler, per profiled target. */
  profileJobs: number;
  /** Distinct orderingKeys of the ordering section ... */
  orderingKeys: number;
  /** ... and jobs per key. */
  orderingPerKey: number;
  /** Jobs per run of the cluster section. */
  clusterJobs: number;
}

export const DEFAULT_SIZES: Sizes = {
  runs: 3,
  // A saturation run's worth: after 3,000 jobs the first measured round still used 36-81 % more
  // worker CPU per delivery than the next two, for every target (docs/benchmarks.md, sixth round).
  warmup: 20_000,
  jobs: 20_000,
  // 10,000 jobs per run: its p99 is the worst 100, not one GC pause's handful.
  latencySeconds: 10,
  latencyRate: 1000,
  memoryJobs: 10_000,
  growthJobs: 10_000,
  bigPayloadJobs: 1500,
  backlogSmall: 10_000,
  backlogBig: 1_000_000,
  backlogDrain: 10_000,
  burstJobs: 100_000,
  burstWindowS: 30,
  burstRate: 100,
  profileJobs: 30_000,
  orderingKeys: 10_000,
  orderingPerKey: 10,
  clusterJobs: 20_000,
};

export const QUICK_SIZES: Sizes = {
  runs: 1,
  warmup: 1000,
  jobs: 3000,
  latencySeconds: 2,
  latencyRate: 1000,
  memoryJobs: 2000,
  growthJobs: 1500,
  bigPayloadJobs: 200,
  backlogSmall: 10_000,
  backlogBig: 50_000,
  backlogDrain: 2000,
  burstJobs: 10_000,
  burstWindowS: 6,
  burstRate: 100,
  profileJobs: 5000,
  orderingKeys: 500,
  orderingPerKey: 10,
  clusterJobs: 3000,
};

export const SMALL_PAYLOAD = 500;
export const BIG_PAYLOAD = 50 * 1024;

export interface RunSet {
  runs: DrainFigures[];
  median: { deliveriesPerSec: number; workerCpuUs: number; redisCpuUs: number; peakRssMiB: number };
}

function summarize(runs: DrainFigures[]): RunSet {
  return {
    runs,
    median: {
      deliveriesPerSec: median(runs.map((r) => r.deliveriesPerSec)) ?? NaN,
      workerCpuUs: median(runs.map((r) => r.workerCpuUs)) ?? NaN,
      redisCpuUs: median(runs.map((r) => r.redisCpuUs)) ?? NaN,
      peakRssMiB: Math.max(...runs.map((r) => r.peakRssMiB)),
    },
  };
}

const log = (line: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);

const fmtRun = (f: DrainFigures) =>
  `${Math.round(f.deliveriesPerSec)}/s, worker ${f.workerCpuUs.toFixed(0)} us/delivery (main thread ${f.workerMainThreadUs.toFixed(0)}), redis ${f.redisCpuUs.toFixed(0)} us, rss ${f.peakRssMiB.toFixed(0)} MiB`;

/** Runs `runs` rounds over the targets, rotating who goes first, and keeps every run. */
async function rounds(lab: Lab, targets: Target[], runs: number, jobs: number, bytes: number): Promise<Map<Target, DrainFigures[]>> {
  const out = new Map<Target, DrainFigures[]>(targets.map((t) => [t, []]));
  for (let r = 0; r < runs; r++) {
    for (let k = 0; k < targets.length; k++) {
      const t = targets[(k + r) % targets.length] as Target;
      const f = await measureDrain(lab, t, jobs, bytes);
      log(`  run ${r + 1}/${runs} ${t.label}: ${fmtRun(f)}`);
      out.get(t)?.push(f);
    }
  }
  return out;
}

async function warm(lab: Lab, targets: Target[], jobs: number, bytes = SMALL_PAYLOAD): Promise<void> {
  for (const t of targets) await measureDrain(lab, t, jobs, bytes);
}

// ---------------------------------------------------------------------------------------------
// Saturation and latency: every variant on the same jobs.

export const CORE_TARGETS: TargetKey[] = ['bare', 'undici', 'pool', 'global', 'relay', 'relayRateLimited', 'relayTraced'];

export interface CoreResult {
  saturation: Partial<Record<TargetKey, RunSet>>;
  latency: Partial<Record<TargetKey, LatencyFigures>>;
}

export async function coreSection(
  lab: Lab,
  sizes: Sizes,
  opts: { saturation: boolean; latency: boolean; logLevel: string; targets?: readonly TargetKey[] },
): Promise<CoreResult> {
  const result: CoreResult = { saturation: {}, latency: {} };
  const targets: Target[] = [];
  try {
    for (const key of opts.targets ?? CORE_TARGETS) targets.push(await startTarget(lab, key, { logLevel: opts.logLevel }));
    log(`warming up ${targets.length} targets with ${sizes.warmup} jobs each`);
    await warm(lab, targets, sizes.warmup);
    if (opts.saturation) {
      log(`saturation: ${sizes.runs} run(s) of ${sizes.jobs} jobs per target`);
      const all = await rounds(lab, targets, sizes.runs, sizes.jobs, SMALL_PAYLOAD);
      for (const t of targets) result.saturation[t.key as TargetKey] = summarize(all.get(t) ?? []);
    }
    if (opts.latency) {
      const offered = targets.filter((t) => t.offer);
      const runs = new Map<Target, LatencyFigures[]>(offered.map((t) => [t, []]));
      for (let r = 0; r < sizes.runs; r++) {
        for (let k = 0; k < offered.length; k++) {
          const t = offered[(k + r) % offered.length] as Target;
          const l = await t.offer!(sizes.latencyRate, sizes.latencySeconds, SMALL_PAYLOAD);
          log(
            `  latency run ${r + 1}/${sizes.runs} ${t.label}: ${l.jobs} jobs at ${l.offeredPerSec}/s, p50 ${l.p50Ms?.toFixed(1)} ms, p99 ${l.p99Ms?.toFixed(1)} ms`,
          );
          runs.get(t)?.push(l);
        }
      }
      for (const [t, list] of runs) {
        const first = list[0] as LatencyFigures;
        result.latency[t.key as TargetKey] = {
          ...first,
          jobs: list.reduce((a, l) => a + l.jobs, 0),
          p50Ms: median(list.map((l) => l.p50Ms)),
          p99Ms: median(list.map((l) => l.p99Ms)),
          maxMs: Math.max(...list.map((l) => l.maxMs ?? 0)),
          workerCpuUs: median(list.map((l) => l.workerCpuUs)),
          redisCpuUs: median(list.map((l) => l.redisCpuUs)),
          redisCommands: medianCommands(list.map((l) => l.redisCommands)),
          runs: list.map((l) => ({ p50Ms: l.p50Ms, p99Ms: l.p99Ms, maxMs: l.maxMs })),
        };
      }
    }
  } finally {
    for (const t of targets) await t.stop();
    await lab.flush();
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Redis memory per waiting job: marginal bytes of a second batch (the first fills BullMQ's
// capped events stream, which then stays the same size).

export interface MemoryResult {
  jobs: number;
  bareBytesPerJob: number;
  relayBytesPerJob: number;
  ratio: number;
}

async function marginalBytes(lab: Lab, n: number, add: (b: JobSpec[]) => Promise<void>): Promise<number> {
  await fillJobs(n, SMALL_PAYLOAD, add);
  const before = await redisUsedMemory(lab.admin);
  await fillJobs(n, SMALL_PAYLOAD, add);
  return ((await redisUsedMemory(lab.admin)) - before) / n;
}

export async function memorySection(lab: Lab, sizes: Sizes): Promise<MemoryResult> {
  const connection = new Redis(lab.redisUrl, { maxRetriesPerRequest: null });
  const bare = new Queue('deliveries', { connection, prefix: `bench-mem-${randomUUID().slice(0, 6)}` });
  const ctx = await createRelayContext(relayConfig(lab, `bench-mem-${randomUUID().slice(0, 6)}`), { processMetrics: false });
  try {
    await ctx.store.put(benchAction('bench', lab.sink.url));
    const bareBytes = await marginalBytes(lab, sizes.memoryJobs, async (b) => {
      await bare.addBulk(b.map((j) => ({ name: 'bench', data: { params: j.params, context: j.context } })));
    });
    const relayBytes = await marginalBytes(lab, sizes.memoryJobs, async (b) => {
      await ctx.producer.enqueueMany(b.map((j) => ({ actionId: 'bench', params: j.params, context: j.context })));
    });
    log(`memory per waiting job: bare BullMQ ${bareBytes.toFixed(0)} B, action-relay producer ${relayBytes.toFixed(0)} B`);
    return { jobs: sizes.memoryJobs, bareBytesPerJob: bareBytes, relayBytesPerJob: relayBytes, ratio: relayBytes / bareBytes };
  } finally {
    await bare.close();
    connection.disconnect();
    await ctx.close();
    await lab.flush();
  }
}

// ---------------------------------------------------------------------------------------------
// How cost grows: distinct actions, payload size, worker processes, backlog depth.

export interface GrowthResult {
  actions: { one: RunSet; thousand: RunSet };
  payload: { relaySmall: RunSet; relayBig: RunSet; poolSmall: RunSet; poolBig: RunSet; bigBytes: number };
  processes: { one: RunSet; two: RunSet };
  backlog: {
    small: { waiting: number; drained: DrainFigures };
    big: { waiting: number; drained: DrainFigures; fillPerSec: number; redisUsedMemoryMiB: number };
  };
}

export async function growthSection(lab: Lab, sizes: Sizes, opts: { logLevel: string }): Promise<GrowthResult> {
  const targets: Target[] = [];
  const start = async (t: Promise<Target>) => {
    const started = await t;
    targets.push(started);
    return started;
  };
  const runs = Math.max(1, Math.min(2, sizes.runs));
  try {
    const relay = await start(startTarget(lab, 'relay', { logLevel: opts.logLevel }));
    const relay1000 = await start(relayTarget(lab, 'relay1000', 'action-relay, 1,000 actions', { logLevel: opts.logLevel, actions: 1000 }));
    const pool = await start(startTarget(lab, 'pool'));
    const relay2 = await start(relayTarget(lab, 'relay2', 'action-relay, 2 worker processes', { logLevel: opts.logLevel, processes: 2 }));
    // The 1,000-action warm-up gives every action to both processes' caches at least once.
    log(`growth: warming up`);
    await warm(lab, [relay, pool, relay2], sizes.warmup);
    await warm(lab, [relay1000], Math.max(sizes.warmup, 2000));

    log(`growth: 1 vs 1,000 actions, 1 vs 2 worker processes, ${runs} run(s) of ${sizes.growthJobs} jobs`);
    const small = await rounds(lab, [relay, relay1000, relay2, pool], runs, sizes.growthJobs, SMALL_PAYLOAD);
    log(`growth: ${BIG_PAYLOAD} B payloads, ${runs} run(s) of ${sizes.bigPayloadJobs} jobs`);
    await warm(lab, [relay, pool], Math.min(200, sizes.bigPayloadJobs), BIG_PAYLOAD);
    const big = await rounds(lab, [relay, pool], runs, sizes.bigPayloadJobs, BIG_PAYLOAD);
    const set = (m: Map<Target, DrainFigures[]>, t: Target) => summarize(m.get(t) ?? []);

    // Stop the others so that the backlog runs have the machine to themselves.
    for (const t of [relay1000, pool, relay2]) await t.stop();
    targets.splice(0, targets.length, relay);

    log(`growth: backlog of ${sizes.backlogSmall} waiting jobs`);
    const smallBacklog = await measureDrain(lab, relay, sizes.backlogSmall, SMALL_PAYLOAD, { fast: true });
    log(`  ${fmtRun(smallBacklog)}`);
    log(`growth: filling a backlog of ${sizes.backlogBig} waiting jobs`);
    const fillStart = performance.now();
    await relay.fill(sizes.backlogBig, SMALL_PAYLOAD, { fast: true });
    const fillPerSec = sizes.backlogBig / ((performance.now() - fillStart) / 1000);
    const usedMiB = (await redisUsedMemory(lab.admin)) / 1024 / 1024;
    log(
      `  filled at ${Math.round(fillPerSec)} jobs/s, Redis used_memory ${usedMiB.toFixed(0)} MiB; timing the first ${sizes.backlogDrain}`,
    );
    // The backlog is in place: time the front of it (the fill above is not part of the run).
    const bigBacklog = await measureDrain(lab, relay, sizes.backlogDrain, SMALL_PAYLOAD, { fast: true });
    log(`  ${fmtRun(bigBacklog)}`);

    return {
      actions: { one: set(small, relay), thousand: set(small, relay1000) },
      payload: {
        relaySmall: set(small, relay),
        relayBig: set(big, relay),
        poolSmall: set(small, pool),
        poolBig: set(big, pool),
        bigBytes: BIG_PAYLOAD,
      },
      processes: { one: set(small, relay), two: set(small, relay2) },
      backlog: {
        small: { waiting: sizes.backlogSmall, drained: smallBacklog },
        big: { waiting: sizes.backlogBig + sizes.backlogDrain, drained: bigBacklog, fillPerSec, redisUsedMemoryMiB: usedMiB },
      },
    };
  } finally {
    for (const t of targets) await t.stop();
    await lab.flush();
  }
}

// ---------------------------------------------------------------------------------------------
// A burst of jobs for an endpoint limited to `burstRate`/s, over 2 worker processes.

export interface BurstResult {
  jobs: number;
  limitPerSec: number;
  windowS: number;
  enqueueSeconds: number;
  deliveredInWindow: number;
  achievedPerSec: number;
  /** Rate over the second half of the window, once every job has been picked at least once or is waiting for its slot. */
  secondHalfPerSec: number;
  /** Deliveries in each second of the window. */
  perSecond: number[];
  /** Length of the wait list at the end of each second of the window. */
  waitingPerSecond: number[];
  peakIn1s: number;
  meanPicksAll: number;
  meanPicksDelivered: number;
  /** Mean over the jobs picked at least once in the window. */
  meanPicksPicked: number;
  pickedMoreThanTwice: number;
  neverPicked: number;
  /** Delivered jobs whose results entry shows more than one attempt (waiting must use none). */
  deliveredWithExtraAttempts: number;
  secondsToFinish: number;
}

export async function burstSection(lab: Lab, sizes: Sizes, opts: { logLevel: string }): Promise<BurstResult> {
  const limit = { max: sizes.burstRate, perMs: 1000 };
  const target = await relayTarget(lab, 'burst', `action-relay, ${sizes.burstRate}/s endpoint`, {
    logLevel: opts.logLevel,
    processes: 2,
    rateLimit: limit,
  });
  try {
    const { ctx } = target;
    const queue = ctx.queue;
    const ids: string[] = [];
    log(`burst: enqueueing ${sizes.burstJobs} jobs through the producer`);
    const t0 = performance.now();
    await fillJobs(sizes.burstJobs, SMALL_PAYLOAD, async (batch) => {
      const res = await ctx.producer.enqueueMany(batch.map((j) => ({ actionId: 'bench', params: j.params, context: j.context })));
      for (const r of res) {
        if (!('jobId' in r)) throw new Error(`burst: the producer refused a job: ${JSON.stringify(r)}`);
        ids.push(r.jobId);
      }
    });
    const enqueueSeconds = (performance.now() - t0) / 1000;
    log(`  enqueued in ${enqueueSeconds.toFixed(1)} s; running 2 workers for ${sizes.burstWindowS} s`);
    await lab.sink.reset();
    const windowStart = benchClock();
    await ctx.queue.resume();
    // Once a second: how many jobs still wait to be picked a first time or again (the wait list).
    const waitingPerSecond: number[] = [];
    for (let sec = 1; sec <= sizes.burstWindowS; sec++) {
      await new Promise((r) => setTimeout(r, windowStart + sec * 1000 - benchClock()));
      // Fresh jobs wait in the prioritized set; jobs back for their slot in the plain wait list.
      const [due, fresh] = await Promise.all([ctx.redis.llen(queue.toKey('wait')), ctx.redis.zcard(queue.toKey('prioritized'))]);
      waitingPerSecond.push(due + fresh);
    }
    const arrivals = await lab.sink.arrivals();
    // Picks are read once nothing moves any more.
    await target.stopWorkers();

    const picks = new Map<string, number>();
    for (let i = 0; i < ids.length; i += 1000) {
      const pipe = ctx.redis.pipeline();
      const chunk = ids.slice(i, i + 1000);
      for (const id of chunk) pipe.hget(queue.toKey(id), 'ats');
      const res = (await pipe.exec()) ?? [];
      chunk.forEach((id, k) => picks.set(id, Number(res[k]?.[1] ?? 0)));
    }
    const delivered = await ctx.redis.zrange(queue.toKey('completed'), 0, -1);
    const entries = (await ctx.redis.xrange(ctx.keys.results, '-', '+')) as [string, string[]][];
    const extraAttempts = entries.filter(([, f]) => f[f.indexOf('attempts') + 1] !== '1').length;
    const all = [...picks.values()];
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    const deliveredPicks = delivered.map((id) => picks.get(id) ?? 0);
    const perSecond = Array.from({ length: sizes.burstWindowS }, () => 0);
    for (const at of arrivals) {
      const sec = Math.floor((at - windowStart) / 1000);
      if (sec >= 0 && sec < perSecond.length) perSecond[sec] = (perSecond[sec] ?? 0) + 1;
    }
    const half = Math.floor(sizes.burstWindowS / 2);
    const result: BurstResult = {
      jobs: sizes.burstJobs,
      limitPerSec: sizes.burstRate,
      windowS: sizes.burstWindowS,
      enqueueSeconds,
      deliveredInWindow: arrivals.length,
      achievedPerSec: arrivals.length / sizes.burstWindowS,
      secondHalfPerSec: sum(perSecond.slice(half)) / (sizes.burstWindowS - half),
      perSecond,
      waitingPerSecond,
      peakIn1s: maxInWindow(arrivals, 1000),
      meanPicksAll: sum(all) / all.length,
      meanPicksDelivered: deliveredPicks.length > 0 ? sum(deliveredPicks) / deliveredPicks.length : NaN,
      meanPicksPicked: sum(all) / Math.max(1, all.filter((p) => p > 0).length),
      pickedMoreThanTwice: all.filter((p) => p > 2).length,
      neverPicked: all.filter((p) => p === 0).length,
      deliveredWithExtraAttempts: extraAttempts,
      secondsToFinish: sizes.burstJobs / sizes.burstRate,
    };
    log(
      `  ${result.deliveredInWindow} delivered in ${result.windowS} s (peak ${result.peakIn1s} in 1 s), mean picks ${result.meanPicksAll.toFixed(3)} (all) / ${result.meanPicksDelivered.toFixed(3)} (delivered), ${result.pickedMoreThanTwice} picked more than twice`,
    );
    return result;
  } finally {
    await target.stop();
    await lab.flush();
  }
}

// ---------------------------------------------------------------------------------------------
// CPU profiles of action-relay's worker and the Pool baseline under the same saturation load.

export interface ProfileResult {
  dir: string;
  deliveries: number;
  relay: ProfileSummary;
  pool: ProfileSummary;
  comparison: string;
}

/**
 * Profiles one warm worker process over one saturation run (the profiler runs only during the
 * measured span), and scales the profile to the CPU measured over that span.
 */
async function profileTarget(
  lab: Lab,
  key: 'relay' | 'pool',
  sizes: Sizes,
  opts: { logLevel: string; dir: string },
): Promise<ProfileSummary> {
  const target = await startTarget(lab, key, { logLevel: opts.logLevel, inspect: true });
  try {
    await warm(lab, [target], sizes.warmup);
    const [url] = await target.inspectorUrls();
    const profiler = await connectProfiler(url as string);
    let profile: CpuProfile | undefined;
    const f = await measureDrain(lab, target, sizes.profileJobs, SMALL_PAYLOAD, {
      beforeRelease: () => profiler.start(),
      afterRelease: async () => {
        profile = await profiler.stop();
      },
    });
    profiler.close();
    log(`profile ${target.label} (profiler on): ${fmtRun(f)}`);
    const file = join(opts.dir, `${key}.cpuprofile`);
    writeFileSync(file, JSON.stringify(profile));
    return summarizeCpuProfile(profile as CpuProfile, file, f.jobs, f.workerCpuUs);
  } finally {
    await target.stop();
  }
}

export async function profileSection(lab: Lab, sizes: Sizes, opts: { logLevel: string; dir: string }): Promise<ProfileResult> {
  mkdirSync(opts.dir, { recursive: true });
  const relay = await profileTarget(lab, 'relay', sizes, opts);
  const pool = await profileTarget(lab, 'pool', sizes, opts);
  await lab.flush();
  return {
    dir: opts.dir,
    deliveries: sizes.profileJobs,
    relay,
    pool,
    comparison: compareProfiles(relay, pool, 'action-relay', 'pool baseline'),
  };
}

// ---------------------------------------------------------------------------------------------
// Ordered delivery (orderingKey) against the same jobs without a key, and what a job waiting in
// line costs in Redis memory.

export interface OrderingResult {
  keys: number;
  perKey: number;
  unordered: RunSet;
  ordered: RunSet;
  /** Ordered over unordered deliveries per second (medians), the queue filled beforehand. */
  ratio: number;
  /**
   * The same per round, of the two runs measured back to back: on a shared machine whose load
   * drifts over the minutes a run takes, the steadier figure.
   */
  roundRatios: number[];
  /**
   * The same over enqueue and delivery one after the other (fill + drain time): an unordered job
   * is added to BullMQ when enqueued, an ordered one waiting in line when its turn comes, so the
   * drain alone charges ordered jobs with work the unordered ones did before it.
   */
  endToEnd: { unorderedPerSec: number; orderedPerSec: number; ratio: number; unorderedRedisCpuUs: number; orderedRedisCpuUs: number };
  memory: {
    jobs: number;
    unorderedBytesPerJob: number;
    orderedBytesPerJob: number;
    /** What a job waiting in line costs over one waiting in the queue. */
    extraBytesPerJob: number;
  };
}

export async function orderingSection(lab: Lab, sizes: Sizes, opts: { logLevel: string }): Promise<OrderingResult> {
  const n = sizes.orderingKeys * sizes.orderingPerKey;
  // Every run (default 3, `--runs`): a 100,000-job run takes minutes, and on a shared machine the
  // per-round ratio moves with the load; the median of the rounds is the figure checked.
  const runs = Math.max(1, sizes.runs);
  const targets: Target[] = [];
  try {
    // Memory first, with no worker running: every job stays where the producer put it.
    const ctx = await createRelayContext(relayConfig(lab, `bench-ord-mem-${randomUUID().slice(0, 6)}`), { processMetrics: false });
    let memory: OrderingResult['memory'];
    try {
      await ctx.store.put(benchAction('bench', lab.sink.url));
      const add = (keys?: number) => async (b: JobSpec[]) => {
        await ctx.producer.enqueueMany(
          b.map((j) => ({
            actionId: 'bench',
            params: j.params,
            context: j.context,
            ...(keys ? { orderingKey: `key-${j.i % keys}` } : {}),
          })),
        );
      };
      const jobs = Math.min(n, 20_000);
      const unorderedBytes = await marginalBytes(lab, jobs, add());
      // Keys are few against the jobs: nearly every job waits in line behind its key's first.
      const orderedBytes = await marginalBytes(lab, jobs, add(Math.max(1, Math.floor(jobs / sizes.orderingPerKey))));
      memory = {
        jobs,
        unorderedBytesPerJob: unorderedBytes,
        orderedBytesPerJob: orderedBytes,
        extraBytesPerJob: orderedBytes - unorderedBytes,
      };
      log(`ordering: memory per waiting job: unordered ${unorderedBytes.toFixed(0)} B, ordered ${orderedBytes.toFixed(0)} B`);
    } finally {
      await ctx.close();
      await lab.flush();
    }

    const unordered = await relayTarget(lab, 'relay', 'action-relay, no orderingKey', { logLevel: opts.logLevel });
    targets.push(unordered);
    const ordered = await relayTarget(lab, 'relayOrdered', `action-relay, ${int(sizes.orderingKeys)} keys x ${sizes.orderingPerKey}`, {
      logLevel: opts.logLevel,
      orderingKeys: sizes.orderingKeys,
    });
    targets.push(ordered);
    log(`ordering: warming up`);
    await warm(lab, [unordered, ordered], sizes.warmup);
    log(`ordering: ${runs} run(s) of ${int(n)} jobs, ordered (${int(sizes.orderingKeys)} keys x ${sizes.orderingPerKey}) and not`);
    const figures = new Map<Target, DrainFigures[]>([
      [unordered, []],
      [ordered, []],
    ]);
    for (let r = 0; r < runs; r++) {
      // Alternating who goes first; a busy shared machine may be far below the usual rates.
      for (const t of r % 2 === 0 ? [unordered, ordered] : [ordered, unordered]) {
        const f = await measureDrain(lab, t, n, SMALL_PAYLOAD, { timeoutMs: Math.max(120_000, n * 20) });
        log(`  run ${r + 1}/${runs} ${t.label}: ${fmtRun(f)}`);
        figures.get(t)?.push(f);
      }
    }
    const u = summarize(figures.get(unordered) ?? []);
    const o = summarize(figures.get(ordered) ?? []);
    const total = (runs: DrainFigures[]) => ({
      perSec: median(runs.map((f) => f.jobs / (f.fillSeconds + f.seconds))) ?? NaN,
      redisCpuUs: median(runs.map((f) => f.fillRedisCpuUs + f.redisCpuUs)) ?? NaN,
    });
    const tu = total(u.runs);
    const to = total(o.runs);
    return {
      keys: sizes.orderingKeys,
      perKey: sizes.orderingPerKey,
      unordered: u,
      ordered: o,
      ratio: o.median.deliveriesPerSec / u.median.deliveriesPerSec,
      roundRatios: o.runs.map((f, r) => f.deliveriesPerSec / (u.runs[r]?.deliveriesPerSec ?? NaN)),
      endToEnd: {
        unorderedPerSec: tu.perSec,
        orderedPerSec: to.perSec,
        ratio: to.perSec / tu.perSec,
        unorderedRedisCpuUs: tu.redisCpuUs,
        orderedRedisCpuUs: to.redisCpuUs,
      },
      memory,
    };
  } finally {
    for (const t of targets) await t.stop();
    await lab.flush();
  }
}

const int = (v: number) => Math.round(v).toLocaleString('en-US');
