// One saturation run: jobs filled while held back, then released and timed until all are done,
// with the CPU of the worker processes and of Redis read before and after.
import type { Lab } from './lab.js';
import {
  commandsPerDelivery,
  mainThreadsCpuSeconds,
  processesCpuSeconds,
  processPeakRss,
  redisCommandStats,
  redisCpuSeconds,
  type CommandCost,
} from './proc-stats.js';
import type { Target } from './targets.js';

export interface DrainFigures {
  jobs: number;
  seconds: number;
  deliveriesPerSec: number;
  /** Worker CPU (user + system, all worker processes) per delivery, in microseconds. */
  workerCpuUs: number;
  /** The part of workerCpuUs spent on the worker processes' main threads (JavaScript). */
  workerMainThreadUs: number;
  /** Redis server CPU per delivery, in microseconds. */
  redisCpuUs: number;
  /** Largest peak RSS of the worker processes so far, in MiB. */
  peakRssMiB: number;
  /** Requests the sink counted (HTTP targets), to check that every job was delivered. */
  sinkCount: number | null;
  /** How long the enqueue (the fill, before the measured span) took. */
  fillSeconds: number;
  /** Redis server CPU per job during the fill, in microseconds. */
  fillRedisCpuUs: number;
  /** Redis commands per delivery by name (calls and server microseconds), the busiest first. */
  redisCommands: CommandCost[];
}

export interface DrainOptions {
  /** Fill with server-side copies (big backlogs). */
  fast?: boolean;
  /** Called after the fill, before the measured span (e.g. to start a profiler). */
  beforeRelease?: () => Promise<void>;
  /** Called after the measured span. */
  afterRelease?: () => Promise<void>;
  /** How long the jobs may take to end. @defaultValue 2 ms per job, at least a minute */
  timeoutMs?: number;
}

export async function measureDrain(lab: Lab, target: Target, n: number, bytes: number, opts: DrainOptions = {}): Promise<DrainFigures> {
  const fillRedis0 = await redisCpuSeconds(lab.admin);
  const fill0 = performance.now();
  await target.fill(n, bytes, { fast: opts.fast ?? false });
  const fillSeconds = (performance.now() - fill0) / 1000;
  const fillRedisCpuUs = (((await redisCpuSeconds(lab.admin)) - fillRedis0) / n) * 1e6;
  await lab.sink.reset();
  await opts.beforeRelease?.();
  const pids = target.pids();
  const cpu0 = processesCpuSeconds(pids);
  const main0 = mainThreadsCpuSeconds(pids);
  const redis0 = await redisCpuSeconds(lab.admin);
  const commands0 = await redisCommandStats(lab.admin);
  const t0 = performance.now();
  // Generous: a loaded 2-core machine may be ten times slower than the figures expected.
  await target.release(n, opts.timeoutMs ?? Math.max(60_000, n * 2));
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = processesCpuSeconds(pids);
  const main1 = mainThreadsCpuSeconds(pids);
  const redis1 = await redisCpuSeconds(lab.admin);
  const commands1 = await redisCommandStats(lab.admin);
  await opts.afterRelease?.();
  const sink = target.http ? await lab.sink.summary() : null;
  if (sink && sink.count < n) throw new Error(`${target.label}: ${n} jobs ended but the sink counted only ${sink.count} requests`);
  return {
    jobs: n,
    seconds,
    deliveriesPerSec: n / seconds,
    workerCpuUs: ((cpu1 - cpu0) / n) * 1e6,
    workerMainThreadUs: ((main1 - main0) / n) * 1e6,
    redisCpuUs: ((redis1 - redis0) / n) * 1e6,
    peakRssMiB: Math.max(...pids.map((p) => processPeakRss(p))) / 1024 / 1024,
    sinkCount: sink ? sink.count : null,
    fillSeconds,
    fillRedisCpuUs,
    redisCommands: commandsPerDelivery(commands0, commands1, n),
  };
}
