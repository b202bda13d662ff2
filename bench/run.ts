// `npm run bench`: starts a private redis-server, a sink process and worker processes, measures
// action-relay against bare BullMQ, raw undici and two hand-written baselines on the same jobs,
// prints a markdown report and writes the raw figures to bench/results/. See docs/benchmarks.md.
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import { REDUCER_FAVORS_MEMORY_FLAG, tuneV8ForDelivery, turnOffUnlessNamed } from '../src/cli/v8-tuning.js';
import { startLab } from './lab.js';
import { redisVersion } from './proc-stats.js';
import { formatReport, type BenchResults } from './report.js';
import type { TargetKey } from './targets.js';
import {
  CORE_TARGETS,
  DEFAULT_SIZES,
  QUICK_SIZES,
  burstSection,
  coreSection,
  growthSection,
  memorySection,
  orderingSection,
  profileSection,
  type Sizes,
} from './sections.js';
import { formatSummary } from './profile-summary.js';
import { clusterSection } from './cluster-section.js';

const SECTIONS = ['saturation', 'latency', 'memory', 'growth', 'burst', 'profile', 'ordering', 'cluster'] as const;
type Section = (typeof SECTIONS)[number];
const DEFAULT_SECTIONS: Section[] = ['saturation', 'latency', 'memory', 'growth', 'burst'];

/** bench/results in the repository, whether run from dist/bench or from bench. */
const RESULTS_DIR = fileURLToPath(
  new URL(import.meta.url.includes('/dist/bench/') ? '../../bench/results/' : './results/', import.meta.url),
);

interface Flags {
  quick: boolean;
  sections?: string;
  profile: boolean;
  runs?: string;
  jobs?: string;
  targets?: string;
  logLevel: string;
  out?: string;
}

function parseSections(flags: Flags): Section[] {
  const chosen = flags.sections ? flags.sections.split(',').map((s) => s.trim()) : [...DEFAULT_SECTIONS];
  if (flags.profile && !chosen.includes('profile')) chosen.push('profile');
  for (const s of chosen) {
    if (!(SECTIONS as readonly string[]).includes(s)) throw new Error(`unknown section "${s}": choose from ${SECTIONS.join(', ')}`);
  }
  return chosen as Section[];
}

function parseTargets(list: string | undefined): TargetKey[] {
  if (!list) return [...CORE_TARGETS];
  const chosen = list.split(',').map((s) => s.trim());
  for (const t of chosen) {
    if (!(CORE_TARGETS as readonly string[]).includes(t)) throw new Error(`unknown target "${t}": choose from ${CORE_TARGETS.join(', ')}`);
  }
  return chosen as TargetKey[];
}

function positive(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got "${value}"`);
  return n;
}

async function main(argv: string[]): Promise<void> {
  const program = new Command('bench')
    .description('Measure action-relay against bare BullMQ, raw undici and two hand-written baselines on a private Redis.')
    .option('--quick', 'a smoke run of about a minute: small sizes, one run each', false)
    .option('--sections <list>', `comma list of sections (${SECTIONS.join(', ')}); default: ${DEFAULT_SECTIONS.join(',')}`)
    .option('--profile', 'also record CPU profiles of the action-relay worker and the Pool baseline (the profile section)', false)
    .option('--runs <n>', 'measured runs per figure (median reported)')
    .option('--jobs <n>', 'jobs per saturation run')
    .option('--targets <list>', `variants of the saturation and latency sections (${CORE_TARGETS.join(', ')}); default: all`)
    .addOption(new Option('--log-level <level>', 'LOG_LEVEL of the action-relay workers').default('info'))
    .option('--out <file>', 'where to write the raw figures (JSON); default bench/results/bench-<time>.json');
  program.parse(argv);
  const flags = program.opts<Flags>();
  const sections = parseSections(flags);
  const targets = parseTargets(flags.targets);
  const sizes: Sizes = { ...(flags.quick ? QUICK_SIZES : DEFAULT_SIZES) };
  sizes.runs = positive('runs', flags.runs) ?? sizes.runs;
  sizes.jobs = positive('jobs', flags.jobs) ?? sizes.jobs;

  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  mkdirSync(RESULTS_DIR, { recursive: true });
  const outFile = flags.out ?? join(RESULTS_DIR, `bench-${stamp}.json`);

  // This process offers the latency runs' load (one enqueue per job), and V8's pretenuring made
  // its pauses the bursts that every target then drains: BullMQ's add allocated its objects in the
  // old generation directly, and its scavenges took 10-33 ms every 2-3 s at 1,000 jobs/s (1.8-5.4 ms
  // with the flag off). Off here as in action-relay's workers, unless the command line names it.
  tuneV8ForDelivery();
  // Node 24's memory reducer also ran a compacting collection here about every 100 s, busy or not:
  // 60-85 ms pauses that landed on whichever target's round was running. Off in this process only
  // (the bench's memory at rest does not matter); workers keep V8's default (docs/operations.md).
  turnOffUnlessNamed(REDUCER_FAVORS_MEMORY_FLAG);
  const lab = await startLab();
  const stopOnSignal = () => {
    process.stderr.write('interrupted: stopping the bench processes and its private Redis\n');
    void lab.stop().finally(() => process.exit(130));
  };
  process.once('SIGINT', stopOnSignal);
  process.once('SIGTERM', stopOnSignal);

  const results: BenchResults = {
    meta: {
      startedAt: new Date().toISOString(),
      node: process.version,
      cpus: availableParallelism(),
      redisVersion: await redisVersion(lab.admin),
      quick: flags.quick,
      sections,
      sizes,
      logLevel: flags.logLevel,
    },
  };
  const opts = { logLevel: flags.logLevel };
  const started = performance.now();
  try {
    if (sections.includes('saturation') || sections.includes('latency')) {
      results.core = await coreSection(lab, sizes, {
        ...opts,
        saturation: sections.includes('saturation'),
        latency: sections.includes('latency'),
        targets,
      });
    }
    if (sections.includes('memory')) results.memory = await memorySection(lab, sizes);
    if (sections.includes('growth')) results.growth = await growthSection(lab, sizes, opts);
    if (sections.includes('burst')) results.burst = await burstSection(lab, sizes, opts);
    if (sections.includes('ordering')) results.ordering = await orderingSection(lab, sizes, opts);
    if (sections.includes('cluster')) {
      results.cluster = await clusterSection(lab, { jobs: sizes.clusterJobs, keys: 12, runs: sizes.runs });
    }
    if (sections.includes('profile')) {
      const dir = join(RESULTS_DIR, `profiles-${stamp}`);
      const p = await profileSection(lab, sizes, { ...opts, dir });
      writeFileSync(
        join(dir, 'summary.md'),
        `${formatSummary(p.relay)}\n\n${formatSummary(p.pool)}\n\n### Per delivery, by package\n\n${p.comparison}\n`,
      );
      results.profile = {
        dir: p.dir,
        deliveries: p.deliveries,
        comparison: p.comparison,
        relayTop: { busyMs: p.relay.busyMs, byPackage: p.relay.byPackage.slice(0, 30), byFunction: p.relay.byFunction.slice(0, 40) },
        poolTop: { busyMs: p.pool.busyMs, byPackage: p.pool.byPackage.slice(0, 30), byFunction: p.pool.byFunction.slice(0, 40) },
      };
    }
  } finally {
    results.meta.finishedAt = new Date().toISOString();
    writeFileSync(outFile, `${JSON.stringify(results, null, 2)}\n`);
    await lab.stop();
    // Also after a failure: what was measured before it is still worth reading.
    process.stdout.write(`${formatReport(results)}\n`);
    process.stdout.write(`Raw figures: ${outFile}\nTook ${((performance.now() - started) / 1000).toFixed(0)} s.\n`);
  }
}

main(process.argv).then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
