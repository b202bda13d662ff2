// The printed report: one markdown table of the variants with ratios to the Pool baseline, then
// memory, growth, burst and profile figures, and the issue's targets checked against them.
import type { BurstResult, CoreResult, GrowthResult, MemoryResult, OrderingResult, ProfileResult, RunSet, Sizes } from './sections.js';
import { CORE_TARGETS } from './sections.js';
import { median } from './stats.js';
import { TARGET_LABELS, type LatencyFigures, type TargetKey } from './targets.js';
import { formatCluster, type ClusterResult } from './cluster-section.js';
import type { CommandCost } from './proc-stats.js';

export interface BenchResults {
  meta: {
    startedAt: string;
    finishedAt?: string;
    node: string;
    cpus: number;
    redisVersion: string;
    quick: boolean;
    sections: string[];
    sizes: Sizes;
    logLevel: string;
  };
  core?: CoreResult;
  memory?: MemoryResult;
  growth?: GrowthResult;
  burst?: BurstResult;
  ordering?: OrderingResult;
  cluster?: ClusterResult;
  profile?: Omit<ProfileResult, 'relay' | 'pool'> & { relayTop: unknown; poolTop: unknown };
}

const BASELINE: TargetKey = 'pool';

const int = (n: number) => Math.round(n).toLocaleString('en-US');
const ratio = (v: number | null | undefined, base: number | null | undefined) =>
  typeof v === 'number' && typeof base === 'number' && base > 0 && Number.isFinite(v) ? ` (${(v / base).toFixed(2)}x)` : '';
const orNa = (v: number | null | undefined, digits: number, unit = '') =>
  typeof v === 'number' && Number.isFinite(v) ? `${v.toFixed(digits)}${unit}` : 'n/a';

/**
 * Each round's p99 of the two, and in how many rounds the second was at or below the first: on a
 * machine whose stalls set the tail, the rounds say more than their medians alone. With `floor`
 * (bare BullMQ's empty processor), its rounds too: the tail of a loop that does nothing per job is
 * the machine's own, and a few rounds do not resolve a difference well under it; many paired
 * rounds can (docs/benchmarks.md).
 */
export function latencyRounds(base: LatencyFigures, other: LatencyFigures, floor?: LatencyFigures): string {
  const a = base.runs ?? [];
  const b = other.runs ?? [];
  const n = Math.min(a.length, b.length);
  if (n < 2) return '';
  const fmt = (l: NonNullable<LatencyFigures['runs']>) =>
    l
      .slice(0, n)
      .map((x) => orNa(x.p99Ms, 1))
      .join(', ');
  let atOrBelow = 0;
  for (let i = 0; i < n; i++) {
    const x = a[i]?.p99Ms;
    const y = b[i]?.p99Ms;
    if (x != null && y != null && y <= x) atOrBelow++;
  }
  const machine = floor?.runs?.length ? `; an empty BullMQ processor ${fmt(floor.runs)} ms` : '';
  return ` (per round, Pool loop ${fmt(a)} ms, every feature on ${fmt(b)} ms: at or below in ${atOrBelow} of ${n}${machine})`;
}

function coreTable(core: CoreResult): string {
  const base = core.saturation[BASELINE]?.median;
  const baseLat = core.latency[BASELINE];
  const lines = [
    '| variant | deliveries/s | worker CPU s per 1k deliveries | Redis CPU s per 1k | worker peak RSS MiB | p50 ms at 1,000/s | p99 ms at 1,000/s |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const key of CORE_TARGETS) {
    const m = core.saturation[key]?.median;
    const l = core.latency[key];
    if (!m && !l) continue;
    const cells = [
      TARGET_LABELS[key],
      m ? `${int(m.deliveriesPerSec)}${ratio(m.deliveriesPerSec, base?.deliveriesPerSec)}` : 'n/a',
      m ? `${(m.workerCpuUs / 1000).toFixed(3)}${ratio(m.workerCpuUs, base?.workerCpuUs)}` : 'n/a',
      m ? `${(m.redisCpuUs / 1000).toFixed(3)}${ratio(m.redisCpuUs, base?.redisCpuUs)}` : 'n/a',
      m ? `${m.peakRssMiB.toFixed(0)}${ratio(m.peakRssMiB, base?.peakRssMiB)}` : 'n/a',
      l ? `${orNa(l.p50Ms, 1)}${ratio(l.p50Ms, baseLat?.p50Ms)}${l.source === 'finishedOn' ? ' *' : ''}` : 'n/a',
      l ? `${orNa(l.p99Ms, 1)}${ratio(l.p99Ms, baseLat?.p99Ms)}${l.source === 'finishedOn' ? ' *' : ''}` : 'n/a',
    ];
    lines.push(`| ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

/**
 * CPU per job at the offered rate, beside the saturation figure: there a worker shares each fetch,
 * finish and log write among the jobs of a turn; at 1,000 jobs/s most jobs have theirs alone.
 */
export function offeredCpuTable(core: CoreResult): string {
  const base = core.latency[BASELINE];
  const lines = [
    '| variant | worker CPU µs per delivery at 1,000/s | at saturation | Redis CPU µs per delivery at 1,000/s (enqueue included) |',
    '| --- | ---: | ---: | ---: |',
  ];
  for (const key of CORE_TARGETS) {
    const l = core.latency[key];
    if (!l || (l.workerCpuUs == null && l.redisCpuUs == null)) continue;
    const saturated = core.saturation[key]?.median.workerCpuUs;
    const cells = [
      TARGET_LABELS[key],
      `${orNa(l.workerCpuUs, 0)}${ratio(l.workerCpuUs, base?.workerCpuUs)}`,
      orNa(saturated, 0),
      `${orNa(l.redisCpuUs, 0)}${ratio(l.redisCpuUs, base?.redisCpuUs)}`,
    ];
    lines.push(`| ${cells.join(' | ')} |`);
  }
  return lines.length > 2 ? lines.join('\n') : '';
}

/** Redis commands per delivery of each variant, costliest first, as `pick` gives them. */
function commandsTable(title: string, pick: (key: TargetKey) => CommandCost[] | undefined): string {
  const lines = [`| variant | ${title}: calls (server us), costliest first; commands run by scripts are listed too |`, '| --- | --- |'];
  for (const key of CORE_TARGETS) {
    const list = pick(key);
    if (!list || list.length === 0) continue;
    const cells = list.slice(0, 8).map((c) => `${c.name} ${c.calls.toFixed(2)} (${c.usec.toFixed(1)})`);
    lines.push(`| ${TARGET_LABELS[key]} | ${cells.join(', ')} |`);
  }
  return lines.length > 2 ? lines.join('\n') : '';
}

/** At saturation, from each variant's last run. */
const saturationCommandsTable = (core: CoreResult) =>
  commandsTable('Redis commands per delivery', (key) => core.saturation[key]?.runs.at(-1)?.redisCommands);

/**
 * At the offered rate (medians over the rounds, enqueues included): how many round trips a job
 * costs when it rarely shares a fetch or a finish, and how long Redis spends in each.
 */
export const offeredCommandsTable = (core: CoreResult) =>
  commandsTable('Redis commands per delivery at 1,000/s', (key) => core.latency[key]?.redisCommands);

/** A block of the report and the blank line after it; nothing when the block is empty. */
const paragraph = (text: string): string[] => (text ? [text, ''] : []);

/** How far apart the runs of each variant were: a large spread means a busy machine. */
function spreadLine(core: CoreResult): string {
  const parts: string[] = [];
  for (const key of CORE_TARGETS) {
    const runs = core.saturation[key]?.runs ?? [];
    if (runs.length < 2) continue;
    const cpu = runs.map((x) => x.workerCpuUs);
    parts.push(`${key} ${(Math.max(...cpu) / Math.min(...cpu)).toFixed(2)}x`);
  }
  return parts.length > 0 ? `Spread of worker CPU per delivery over the runs (max / min): ${parts.join(', ')}.` : '';
}

function growthTable(g: GrowthResult): string {
  const row = (what: string, a: RunSet, b: RunSet, la: string, lb: string) => {
    const ma = a.median;
    const mb = b.median;
    return `| ${what} | ${la}: ${int(ma.deliveriesPerSec)}/s, ${ma.workerCpuUs.toFixed(0)} us | ${lb}: ${int(mb.deliveriesPerSec)}/s, ${mb.workerCpuUs.toFixed(0)} us | ${(mb.deliveriesPerSec / ma.deliveriesPerSec).toFixed(2)}x | ${(mb.workerCpuUs / ma.workerCpuUs).toFixed(2)}x |`;
  };
  const bs = g.backlog.small.drained;
  const bb = g.backlog.big.drained;
  return [
    '| dimension | from | to | deliveries/s ratio | worker CPU per delivery ratio |',
    '| --- | --- | --- | ---: | ---: |',
    row('distinct actions (action-relay)', g.actions.one, g.actions.thousand, '1', '1,000'),
    row('payload (action-relay)', g.payload.relaySmall, g.payload.relayBig, '500 B', `${g.payload.bigBytes / 1024} KB`),
    row('payload (Pool baseline)', g.payload.poolSmall, g.payload.poolBig, '500 B', `${g.payload.bigBytes / 1024} KB`),
    row('worker processes (action-relay; CPU summed)', g.processes.one, g.processes.two, '1', '2'),
    `| waiting jobs (action-relay, first ${int(bb.jobs)} timed) | ${int(g.backlog.small.waiting)}: ${int(bs.deliveriesPerSec)}/s, ${bs.workerCpuUs.toFixed(0)} us, Redis ${bs.redisCpuUs.toFixed(0)} us | ${int(g.backlog.big.waiting)}: ${int(bb.deliveriesPerSec)}/s, ${bb.workerCpuUs.toFixed(0)} us, Redis ${bb.redisCpuUs.toFixed(0)} us | ${(bb.deliveriesPerSec / bs.deliveriesPerSec).toFixed(2)}x | ${(bb.workerCpuUs / bs.workerCpuUs).toFixed(2)}x |`,
  ].join('\n');
}

/** Pool CPU per delivery over the variant's, round by round (runs of one round are measured side by side). */
function roundRatios(pool: RunSet, variant: RunSet): number[] {
  const n = Math.min(pool.runs.length, variant.runs.length);
  return Array.from(
    { length: n },
    (_, i) => (pool.runs[i] as RunSet['runs'][number]).workerCpuUs / (variant.runs[i] as RunSet['runs'][number]).workerCpuUs,
  );
}

/** The issue's targets, each with the measured figure and whether it is met (informative only). */
function targetChecks(r: BenchResults): string[] {
  const out: string[] = [];
  const core = r.core;
  const check = (ok: boolean | null, text: string) => out.push(`- [${ok === null ? '?' : ok ? 'x' : ' '}] ${text}`);
  const sat = core?.saturation;
  const relay = sat?.relay?.median;
  const relayRl = sat?.relayRateLimited?.median;
  const pool = sat?.pool?.median;
  const global = sat?.global?.median;
  if (relay)
    check(relay.workerCpuUs <= 150, `action-relay at most 150 us worker CPU per delivery (goal 125): ${relay.workerCpuUs.toFixed(0)} us`);
  if (relayRl)
    check(
      relayRl.workerCpuUs <= 175,
      `with a non-binding rate limit (and response capture) at most 175 us: ${relayRl.workerCpuUs.toFixed(0)} us`,
    );
  const traced = sat?.relayTraced?.median;
  if (relay && traced) {
    const extra = traced.workerCpuUs - relay.workerCpuUs;
    out.push(
      `- tracing on (every attempt traced, OTLP/protobuf to loopback): ${traced.workerCpuUs.toFixed(0)} us worker CPU per delivery against ${relay.workerCpuUs.toFixed(0)} us off (${extra >= 0 ? '+' : ''}${extra.toFixed(0)} us, ${((extra / relay.workerCpuUs) * 100).toFixed(0)} %); ${int(traced.deliveriesPerSec)}/s against ${int(relay.deliveriesPerSec)}/s`,
    );
  }
  if (relay && pool) {
    const eff = pool.workerCpuUs / relay.workerCpuUs;
    check(eff >= 0.67, `deliveries per worker-CPU-second at least 0.67x the Pool loop's: ${eff.toFixed(2)}x`);
  }
  if (relay && global) {
    const eff = global.workerCpuUs / relay.workerCpuUs;
    check(eff >= 1.5, `... and at least 1.5x the global-request loop's: ${eff.toFixed(2)}x`);
  }
  // Issue 14: every feature on (the rate-limited variant), as the median of each round's ratio, so
  // that a machine that speeds up or slows down between rounds moves both sides of a ratio alike.
  const rl = sat?.relayRateLimited;
  const poolRuns = sat?.pool;
  if (rl && poolRuns) {
    const rounds = roundRatios(poolRuns, rl);
    const mid = median(rounds);
    if (mid !== null) {
      check(
        mid >= 0.85,
        `every feature on (non-binding rate limit, response capture, signing off): at least 0.85x the Pool loop's deliveries per worker-CPU-second: ${mid.toFixed(2)}x, median of the rounds' ratios (${rounds.map((x) => x.toFixed(2)).join(', ')})`,
      );
    }
  }
  const lat = core?.latency;
  if (lat?.relayRateLimited?.p99Ms != null && lat.pool?.p99Ms != null) {
    check(
      lat.relayRateLimited.p99Ms <= lat.pool.p99Ms,
      `every feature on: p99 at 1,000 jobs/s at or below the Pool loop's (${lat.pool.p99Ms.toFixed(1)} ms): ${lat.relayRateLimited.p99Ms.toFixed(1)} ms${latencyRounds(lat.pool, lat.relayRateLimited, lat.bare)}`,
    );
  }
  if (lat?.relay?.p99Ms != null && lat.pool?.p99Ms != null && lat.global?.p99Ms != null) {
    const best = Math.min(lat.pool.p99Ms, lat.global.p99Ms);
    check(
      lat.relay.p99Ms <= best,
      `p99 at 1,000 jobs/s at or below the baselines' (${best.toFixed(1)} ms): ${lat.relay.p99Ms.toFixed(1)} ms`,
    );
  }
  if (relay) check(relay.peakRssMiB < 250, `worker RSS under 250 MiB: ${relay.peakRssMiB.toFixed(0)} MiB`);
  if (r.memory) {
    check(r.memory.ratio <= 1.3, `Redis memory per waiting job within 1.3x of bare BullMQ: ${r.memory.ratio.toFixed(2)}x`);
  }
  if (r.burst) {
    const b = r.burst;
    // Jobs not yet picked once say nothing about re-picking: judge the ones that were.
    const swept = b.neverPicked === 0;
    check(
      b.meanPicksPicked <= 2 ? (swept ? true : null) : false,
      `burst: mean picks per job near one or two: ${b.meanPicksPicked.toFixed(2)} over the jobs picked${swept ? '' : ` (${int(b.neverPicked)} of ${int(b.jobs)} not picked yet when the window ended)`}`,
    );
    check(
      b.secondHalfPerSec >= 0.95 * b.limitPerSec,
      `burst: the endpoint gets its ${b.limitPerSec}/s (95%) in the second half of the window: ${b.secondHalfPerSec.toFixed(1)}/s`,
    );
  }
  if (r.ordering) {
    check(
      (median(r.ordering.roundRatios) ?? r.ordering.ratio) >= 0.7,
      `ordered delivery at least 70% of unordered throughput: ${(r.ordering.ratio * 100).toFixed(0)}% draining a filled queue (per round: ${pct(r.ordering.roundRatios)}, median ${pct([median(r.ordering.roundRatios) ?? NaN])}), ${(r.ordering.endToEnd.ratio * 100).toFixed(0)}% enqueue + delivery`,
    );
  }
  return out;
}

export function formatReport(r: BenchResults): string {
  const out: string[] = [];
  const m = r.meta;
  out.push(
    `## action-relay bench (${m.quick ? 'quick' : 'full'}): node ${m.node}, ${m.cpus} cores, Redis ${m.redisVersion}, ${m.startedAt}`,
    '',
  );
  if (r.core && Object.keys(r.core.saturation).length + Object.keys(r.core.latency).length > 0) {
    out.push(
      `Same jobs for every variant: ${m.sizes.jobs.toLocaleString('en-US')} jobs per saturation run (500 B JSON payload), ${m.sizes.latencySeconds} s of ${m.sizes.latencyRate.toLocaleString('en-US')} jobs/s per latency run, concurrency 64, 1 worker process each, medians of ${m.sizes.runs} run(s); ratios to the Pool baseline. action-relay workers log at ${m.logLevel}.`,
      '',
      coreTable(r.core),
      '',
      ...paragraph(spreadLine(r.core)),
      ...paragraph(saturationCommandsTable(r.core)),
      ...paragraph(offeredCpuTable(r.core)),
      ...paragraph(offeredCommandsTable(r.core)),
      '\\* bare BullMQ sends no request: its latency is enqueue to the end of the empty processor (job finishedOn - timestamp). Raw undici has no queue, hence no latency at an offered rate.',
      '',
    );
  }
  if (r.memory) {
    out.push(
      `Redis memory per waiting job (marginal, ${r.memory.jobs.toLocaleString('en-US')} jobs): bare BullMQ ${int(r.memory.bareBytesPerJob)} B, action-relay producer ${int(r.memory.relayBytesPerJob)} B (${r.memory.ratio.toFixed(2)}x).`,
      '',
    );
  }
  if (r.growth) {
    out.push('### How cost grows', '', growthTable(r.growth), '');
    out.push(
      `Backlog of ${int(r.growth.backlog.big.waiting)}: 1,000 jobs enqueued with addBulk, the rest server-side copies of them (${int(r.growth.backlog.big.fillPerSec)} jobs/s); Redis used_memory ${int(r.growth.backlog.big.redisUsedMemoryMiB)} MiB. The 50 KB and backlog rows are single-digit runs: read them as trends.`,
      '',
    );
  }
  if (r.burst) {
    const b = r.burst;
    out.push(
      `### Burst: ${int(b.jobs)} jobs at once for a ${b.limitPerSec}/s endpoint, 2 worker processes, ${b.windowS} s window`,
      '',
      `- enqueued through the producer in ${b.enqueueSeconds.toFixed(1)} s`,
      `- delivered in the window: ${int(b.deliveredInWindow)} (${b.achievedPerSec.toFixed(1)}/s of ${b.limitPerSec}/s allowed; ${b.secondHalfPerSec.toFixed(1)}/s over its second half); most in any 1 s window: ${b.peakIn1s}`,
      `- deliveries per second: ${b.perSecond.join(', ')}`,
      `- jobs in the wait list at the end of each second: ${b.waitingPerSecond.map(int).join(', ')}`,
      `- mean picks per job (BullMQ attemptsStarted): ${b.meanPicksAll.toFixed(3)} over all ${int(b.jobs)} jobs (${int(b.neverPicked)} never picked yet), ${b.meanPicksPicked.toFixed(3)} over the ${int(b.jobs - b.neverPicked)} picked, ${b.meanPicksDelivered.toFixed(3)} over the delivered ones; picked more than twice: ${int(b.pickedMoreThanTwice)}`,
      `- delivered jobs that used more than one attempt: ${int(b.deliveredWithExtraAttempts)}`,
      `- finishing the burst takes at least ${int(b.secondsToFinish)} s at ${b.limitPerSec}/s: the window shows its start (the workers picking through the backlog), not its end.`,
      '',
    );
  }
  if (r.ordering) {
    const o = r.ordering;
    const row = (label: string, m: RunSet['median']) =>
      `| ${label} | ${int(m.deliveriesPerSec)} | ${(m.workerCpuUs / 1000).toFixed(3)} | ${(m.redisCpuUs / 1000).toFixed(3)} |`;
    out.push(
      `### Ordering: ${int(o.keys * o.perKey)} jobs, ${int(o.keys)} orderingKeys x ${o.perKey} jobs, against the same jobs without a key (1 worker process, concurrency 64)`,
      '',
      '| variant | deliveries/s | worker CPU s per 1k deliveries | Redis CPU s per 1k |',
      '| --- | ---: | ---: | ---: |',
      row('no orderingKey', o.unordered.median),
      row('orderingKey', o.ordered.median),
      '',
      `Draining a filled queue, ordered throughput is ${(o.ratio * 100).toFixed(0)}% of unordered (per round, the two runs back to back: ${pct(o.roundRatios)}); enqueue and delivery together (fill + drain): ${int(o.endToEnd.orderedPerSec)}/s against ${int(o.endToEnd.unorderedPerSec)}/s, ${(o.endToEnd.ratio * 100).toFixed(0)}%, Redis CPU ${(o.endToEnd.orderedRedisCpuUs / 1000).toFixed(3)} s against ${(o.endToEnd.unorderedRedisCpuUs / 1000).toFixed(3)} s per 1k jobs (an ordered job waiting in line is added to BullMQ when its turn comes, inside the drain). Redis memory per waiting job (marginal, ${int(o.memory.jobs)} jobs, ${o.perKey} per key): ${int(o.memory.unorderedBytesPerJob)} B in the queue, ${int(o.memory.orderedBytesPerJob)} B waiting in line (${o.memory.extraBytesPerJob >= 0 ? '+' : ''}${int(o.memory.extraBytesPerJob)} B).`,
      '',
    );
    const last = (set: RunSet) =>
      set.runs
        .at(-1)
        ?.redisCommands.slice(0, 8)
        .map((c) => `${c.name} ${c.calls.toFixed(2)} (${c.usec.toFixed(1)})`)
        .join(', ');
    out.push(
      `Redis commands per delivery, calls (server us): no key: ${last(o.unordered) ?? 'n/a'}; with a key: ${last(o.ordered) ?? 'n/a'}.`,
      '',
    );
  }
  if (r.cluster) out.push(formatCluster(r.cluster), '');
  if (r.profile) {
    out.push(
      `### Where the time goes (CPU profiles, ${int(r.profile.deliveries)} deliveries each, in ${r.profile.dir})`,
      '',
      r.profile.comparison,
      '',
    );
  }
  const checks = targetChecks(r);
  if (checks.length > 0) out.push('### Targets of issue 7 (measured here, not asserted)', '', ...checks, '');
  return out.join('\n');
}

/** Ratios as percentages, in run order. */
const pct = (ratios: number[]) => ratios.map((x) => `${(x * 100).toFixed(0)}%`).join(', ');
