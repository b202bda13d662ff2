import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { compareProfiles, packageOf, summarize, type CpuProfile } from '../../bench/profile-summary.js';
import { benchClock, buildParams } from '../../bench/payload.js';
import { commandsPerDelivery, medianCommands, type CommandCost } from '../../bench/proc-stats.js';
import { latencyRounds, offeredCommandsTable, offeredCpuTable } from '../../bench/report.js';
import type { CoreResult } from '../../bench/sections.js';
import { maxInWindow, median, percentile } from '../../bench/stats.js';
import type { LatencyFigures } from '../../bench/targets.js';

const frame = (functionName: string, url: string, lineNumber = 0) => ({ functionName, url, lineNumber, columnNumber: 0 });

/** root -> (idle), root -> processJob (src) -> request (undici), root -> (garbage collector). */
const profile: CpuProfile = {
  nodes: [
    { id: 1, callFrame: frame('(root)', '') },
    { id: 2, callFrame: frame('(idle)', '') },
    { id: 3, callFrame: frame('processJob', 'file:///repo/dist/src/delivery/delivery-worker.js', 99) },
    { id: 4, callFrame: frame('request', 'file:///repo/node_modules/undici/lib/api/api-request.js', 9) },
    { id: 5, callFrame: frame('(garbage collector)', '') },
  ],
  startTime: 0,
  // Samples at 100, 200, 400, 700, 1000 us; each lasts until the next, the last until endTime.
  samples: [3, 4, 4, 2, 5],
  timeDeltas: [100, 100, 200, 300, 300],
  endTime: 1100,
};

describe('bench profile summary', () => {
  it('gives each sample the time until the next one, and leaves idle time out of the busy total', () => {
    const s = summarize(profile, 'p.cpuprofile', 2);
    expect(s.idleMs).toBeCloseTo(0.3);
    expect(s.busyMs).toBeCloseTo(0.7); // 100 (processJob) + 200 + 300 (request) + 100 (gc)
    const fn = Object.fromEntries(s.byFunction.map((r) => [r.name, r.selfMs * 1000]));
    expect(fn).toEqual({
      'request undici/lib/api/api-request.js:10': 500,
      'processJob src/delivery/delivery-worker.js:100': 100,
      '(garbage collector)': 100,
    });
    const pkg = Object.fromEntries(s.byPackage.map((r) => [r.name, r.usPerDelivery]));
    expect(pkg).toEqual({ undici: 250, 'action-relay src/delivery': 50, '(garbage collector)': 50 });
  });

  it('scales rows to the measured CPU per delivery by their share of the busy samples', () => {
    const s = summarize(profile, 'p.cpuprofile', 2, 140);
    const pkg = Object.fromEntries(s.byPackage.map((r) => [r.name, r.usPerDelivery]));
    expect(pkg.undici).toBeCloseTo(100);
    expect(pkg['action-relay src/delivery']).toBeCloseTo(20);
    const other = summarize({ ...profile, samples: [4, 4, 4, 2, 5] }, 'q.cpuprofile', 2, 70);
    const table = compareProfiles(s, other, 'A', 'B');
    expect(table).toContain('| action-relay src/delivery | 20.0 | 0.0 | +20.0 |');
    expect(table).toContain('| **total (busy)** | 140.0 | 70.0 | +70.0 |');
  });

  it('names packages: scoped npm packages, node core, action-relay folders, V8 builtins', () => {
    expect(packageOf(frame('x', 'file:///a/node_modules/@pinojs/redact/index.js'))).toBe('@pinojs/redact');
    expect(packageOf(frame('x', 'node:internal/streams/readable'))).toBe('node core');
    expect(packageOf(frame('x', 'file:///a/dist/src/queue/producer.js'))).toBe('action-relay src/queue');
    expect(packageOf(frame('x', '/a/src/actions/template.ts'))).toBe('action-relay src/actions');
    expect(packageOf(frame('JSONStringify', ''))).toBe('(native: V8 builtins)');
    expect(packageOf(frame('(program)', ''))).toBe('(program)');
  });
});

describe('bench statistics', () => {
  it('takes nearest-rank percentiles and medians', () => {
    const sorted = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(sorted, 0.5)).toBe(50);
    expect(percentile(sorted, 0.99)).toBe(99);
    expect(percentile([], 0.5)).toBeNull();
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3, null, NaN])).toBe(2.5);
  });

  it('finds the most events in any sliding window', () => {
    // 3 within [1000, 1999], only 2 within any window starting at 0.
    expect(maxInWindow([0, 999, 1000, 1500, 1999, 3000], 1000)).toBe(3);
    expect(maxInWindow([5, 1, 3], 1000)).toBe(3);
    expect(maxInWindow([], 1000)).toBe(0);
  });
});

describe('bench latency rounds', () => {
  const figures = (p99s: (number | null)[]): LatencyFigures => ({
    offeredPerSec: 1000,
    jobs: 10_000 * p99s.length,
    p50Ms: 1,
    p99Ms: median(p99s),
    maxMs: null,
    source: 'sink',
    workerCpuUs: null,
    redisCpuUs: null,
    redisCommands: [],
    runs: p99s.map((p99Ms) => ({ p50Ms: 1, p99Ms, maxMs: null })),
  });

  it("lists each round's p99 of both and counts the rounds at or below, an equal one included", () => {
    expect(latencyRounds(figures([33.9, 15.2, 12.8]), figures([8.3, 15.2, 45.1]))).toBe(
      ' (per round, Pool loop 33.9, 15.2, 12.8 ms, every feature on 8.3, 15.2, 45.1 ms: at or below in 2 of 3)',
    );
  });

  it('pairs rounds by their index, counts no round without a figure, and stops at the shorter list', () => {
    expect(latencyRounds(figures([5, 6, 7, 8]), figures([4, null, 9]))).toBe(
      ' (per round, Pool loop 5.0, 6.0, 7.0 ms, every feature on 4.0, n/a, 9.0 ms: at or below in 1 of 3)',
    );
  });

  it("adds an empty BullMQ processor's rounds, the machine's own tail, when given", () => {
    expect(latencyRounds(figures([52.6, 67.8, 97.2]), figures([90.1, 59.4, 54.9]), figures([67, 42, 67]))).toBe(
      ' (per round, Pool loop 52.6, 67.8, 97.2 ms, every feature on 90.1, 59.4, 54.9 ms: at or below in 2 of 3; an empty BullMQ processor 67.0, 42.0, 67.0 ms)',
    );
    expect(latencyRounds(figures([5, 6]), figures([4, 7]), { ...figures([3, 3]), runs: undefined })).toBe(
      ' (per round, Pool loop 5.0, 6.0 ms, every feature on 4.0, 7.0 ms: at or below in 1 of 2)',
    );
  });

  it('says nothing for a single round, or for figures without rounds', () => {
    expect(latencyRounds(figures([5]), figures([4]))).toBe('');
    expect(latencyRounds({ ...figures([5, 6]), runs: undefined }, figures([4, 5]))).toBe('');
  });
});

describe('bench CPU per delivery at the offered rate', () => {
  const latency = (workerCpuUs: number | null, redisCpuUs: number | null, redisCommands: CommandCost[] = []): LatencyFigures => ({
    offeredPerSec: 1000,
    jobs: 10_000,
    p50Ms: 1,
    p99Ms: 5,
    maxMs: 9,
    source: 'sink',
    workerCpuUs,
    redisCpuUs,
    redisCommands,
  });

  it('lists each variant measured, with its ratio to the Pool loop and its saturation figure beside it', () => {
    const core: CoreResult = {
      saturation: {
        pool: { runs: [], median: { deliveriesPerSec: 6000, workerCpuUs: 144, redisCpuUs: 100, peakRssMiB: 270 } },
      },
      latency: { pool: latency(400, 320), relayRateLimited: latency(480, 384), relay: latency(null, null) },
    };
    expect(offeredCpuTable(core).split('\n').slice(2)).toEqual([
      '| baseline: BullMQ + undici Pool (30 lines) | 400 (1.00x) | 144 | 320 (1.00x) |',
      '| action-relay, every feature on (non-binding rate limit, response capture) | 480 (1.20x) | n/a | 384 (1.20x) |',
    ]);
  });

  it('is empty without latency figures that carry CPU', () => {
    expect(offeredCpuTable({ saturation: {}, latency: {} })).toBe('');
    expect(offeredCpuTable({ saturation: {}, latency: { pool: latency(null, null) } })).toBe('');
  });

  it('lists the Redis commands per delivery of each variant, costliest first', () => {
    const pool = [
      { name: 'evalsha', calls: 3.2, usec: 301 },
      { name: 'bzpopmin', calls: 0.5, usec: 6.3 },
    ];
    const core: CoreResult = { saturation: {}, latency: { pool: latency(400, 320, pool), relay: latency(480, 384) } };
    expect(offeredCommandsTable(core).split('\n').slice(2)).toEqual([
      '| baseline: BullMQ + undici Pool (30 lines) | evalsha 3.20 (301.0), bzpopmin 0.50 (6.3) |',
    ]);
    expect(offeredCommandsTable({ saturation: {}, latency: { relay: latency(480, 384) } })).toBe('');
  });
});

describe('bench Redis commands per delivery', () => {
  const stats = (entries: [string, number, number][]) => new Map(entries.map(([name, calls, usec]) => [name, { calls, usec }]));

  it('divides what each command did between two snapshots by the deliveries, and leaves out the rare ones', () => {
    const before = stats([
      ['evalsha', 100, 10_000],
      ['info', 5, 50],
    ]);
    const after = stats([
      ['evalsha', 3300, 310_000],
      ['info', 6, 60],
      ['bzpopmin', 500, 6000],
    ]);
    expect(commandsPerDelivery(before, after, 1000)).toEqual([
      { name: 'evalsha', calls: 3.2, usec: 300 },
      { name: 'bzpopmin', calls: 0.5, usec: 6 },
    ]);
  });

  it('takes the median of each command over the runs, a run without it counting as none', () => {
    const runs = [
      [{ name: 'evalsha', calls: 3.2, usec: 300 }],
      [
        { name: 'evalsha', calls: 3.4, usec: 320 },
        { name: 'get', calls: 0.3, usec: 1 },
      ],
      [
        { name: 'evalsha', calls: 3.3, usec: 310 },
        { name: 'get', calls: 0.2, usec: 2 },
      ],
    ];
    expect(medianCommands(runs)).toEqual([
      { name: 'evalsha', calls: 3.3, usec: 310 },
      { name: 'get', calls: 0.2, usec: 1 },
    ]);
  });
});

describe('the clock of the bench and its sink', () => {
  it('reads the same in another process: the sink compares its arrivals with the enqueuing process', () => {
    const before = benchClock();
    const child = spawnSync(
      process.execPath,
      ['--import', 'tsx', '-e', "import('./bench/payload.ts').then((m) => console.log(m.benchClock()))"],
      {
        cwd: fileURLToPath(new URL('../..', import.meta.url)),
        encoding: 'utf8',
      },
    );
    const after = benchClock();
    expect(child.status, child.stderr).toBe(0);
    const theirs = Number(child.stdout.trim());
    expect(theirs).toBeGreaterThanOrEqual(before);
    expect(theirs).toBeLessThanOrEqual(after);
  });

  it('keeps the payload at its size: the enqueue time prints as wide as buildParams allows for', () => {
    const t = benchClock();
    // 13 digits before the point, as epoch ms; at most 3 after it (fewer when they end in zeros).
    expect(String(Math.floor(t))).toHaveLength(13);
    const printed = String(t).length;
    expect(printed).toBeLessThanOrEqual(17);
    // Short of 500 bytes by exactly the decimals' trailing zeros that the number does not print.
    expect(JSON.stringify({ ...buildParams(7, 500), t }).length).toBe(500 - (17 - printed));
  });
});
