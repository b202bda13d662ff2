// Aggregates a V8 .cpuprofile (node --cpu-prof) by function, by file and by package, so that two
// processes doing the same deliveries can be compared per delivery.
//
//   node dist/bench/profile-summary.js <a.cpuprofile> [--deliveries N] [--cpu-us X] [--top 25]
//        [--vs <b.cpuprofile> --vs-deliveries M --vs-cpu-us Y]
// --cpu-us: the measured CPU per delivery, to which the rows are scaled by their share.
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
}

/** The parts of the format (Chrome DevTools protocol `Profiler.Profile`) read here. */
export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface Row {
  name: string;
  selfMs: number;
  /** Share of the busy (non-idle) time. */
  share: number;
  /** Self time per delivery in microseconds; null without a delivery count. */
  usPerDelivery: number | null;
}

export interface ProfileSummary {
  file: string;
  deliveries: number | null;
  /**
   * Measured CPU per delivery the rows are scaled to (the profiler samples wall time, which a busy
   * machine stretches); null: rows are the profile's own time divided by the deliveries.
   */
  cpuUsPerDelivery: number | null;
  /** Sampled time that was not idle, in ms. */
  busyMs: number;
  idleMs: number;
  byFunction: Row[];
  byFile: Row[];
  byPackage: Row[];
}

/** Names V8 gives to time spent outside JavaScript functions. */
const PSEUDO = new Set(['(idle)', '(program)', '(garbage collector)', '(root)']);

/** A path shortened to what identifies it: from node_modules/ or from the repository's dist/ on. */
export function shortFile(url: string): string {
  if (url === '') return '(native)';
  if (url.startsWith('node:')) return url;
  const path = url.startsWith('file://') ? decodeURIComponent(new URL(url).pathname) : url;
  const nm = path.lastIndexOf('/node_modules/');
  if (nm >= 0) return path.slice(nm + '/node_modules/'.length);
  const dist = path.lastIndexOf('/dist/');
  if (dist >= 0) return path.slice(dist + '/dist/'.length);
  // Run from source (tsx): from the repository's own top folders on.
  const m = /\/((?:src|bench|workers)\/.*)$/.exec(path);
  return m ? (m[1] as string) : path;
}

/** The package a function belongs to: an npm package, a folder of action-relay, node core or V8. */
export function packageOf(frame: CallFrame): string {
  if (PSEUDO.has(frame.functionName) && frame.url === '') return frame.functionName;
  const file = shortFile(frame.url);
  if (file === '(native)') return '(native: V8 builtins)';
  if (file.startsWith('node:')) return 'node core';
  const path = frame.url.startsWith('file://') ? decodeURIComponent(new URL(frame.url).pathname) : frame.url;
  if (path.includes('/node_modules/')) {
    const parts = file.split('/');
    return (parts[0] as string).startsWith('@') ? `${parts[0]}/${parts[1]}` : (parts[0] as string);
  }
  const m = /^(src|bench|workers)\/([^/]+)\//.exec(file);
  if (m) return m[1] === 'src' ? `action-relay src/${m[2]}` : `action-relay ${m[1]}`;
  if (file.startsWith('workers/')) return 'action-relay workers';
  if (file.startsWith('bench/')) return 'action-relay bench';
  return file;
}

function functionKey(frame: CallFrame): string {
  const name = frame.functionName || '(anonymous)';
  if (frame.url === '') return name;
  return `${name} ${shortFile(frame.url)}:${frame.lineNumber + 1}`;
}

/** Self time in microseconds per profile node, each sample lasting until the next one. */
export function selfTimes(profile: CpuProfile): Map<number, number> {
  const self = new Map<number, number>();
  const { samples, timeDeltas } = profile;
  let at = profile.startTime;
  const stamps = timeDeltas.map((d) => (at += d));
  for (let i = 0; i < samples.length; i++) {
    const end = i + 1 < stamps.length ? (stamps[i + 1] as number) : profile.endTime;
    const dur = Math.max(0, end - (stamps[i] as number));
    const id = samples[i] as number;
    self.set(id, (self.get(id) ?? 0) + dur);
  }
  return self;
}

function rows(totals: Map<string, number>, busyUs: number, deliveries: number | null, cpuUs: number | null): Row[] {
  return [...totals.entries()]
    .map(([name, us]) => {
      const share = busyUs > 0 ? us / busyUs : 0;
      const usPerDelivery = cpuUs !== null ? share * cpuUs : deliveries ? us / deliveries : null;
      return { name, selfMs: us / 1000, share, usPerDelivery };
    })
    .sort((a, b) => b.selfMs - a.selfMs);
}

export function summarize(
  profile: CpuProfile,
  file: string,
  deliveries: number | null,
  cpuUsPerDelivery: number | null = null,
): ProfileSummary {
  const self = selfTimes(profile);
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const fn = new Map<string, number>();
  const files = new Map<string, number>();
  const pkgs = new Map<string, number>();
  let idle = 0;
  let busy = 0;
  for (const [id, us] of self) {
    const frame = byId.get(id)?.callFrame;
    if (!frame) continue;
    if (frame.functionName === '(idle)') {
      idle += us;
      continue;
    }
    busy += us;
    const add = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + us);
    add(fn, functionKey(frame));
    add(files, frame.url === '' ? frame.functionName || '(native)' : shortFile(frame.url));
    add(pkgs, packageOf(frame));
  }
  return {
    file,
    deliveries,
    cpuUsPerDelivery,
    busyMs: busy / 1000,
    idleMs: idle / 1000,
    byFunction: rows(fn, busy, deliveries, cpuUsPerDelivery),
    byFile: rows(files, busy, deliveries, cpuUsPerDelivery),
    byPackage: rows(pkgs, busy, deliveries, cpuUsPerDelivery),
  };
}

export function summarizeProfile(path: string, deliveries: number | null, cpuUsPerDelivery: number | null = null): ProfileSummary {
  return summarize(JSON.parse(readFileSync(path, 'utf8')) as CpuProfile, path, deliveries, cpuUsPerDelivery);
}

/** Busy time per delivery: the measured CPU when given, else the profile's own. */
function perDelivery(s: ProfileSummary): number | null {
  if (s.cpuUsPerDelivery !== null) return s.cpuUsPerDelivery;
  return s.deliveries ? (s.busyMs * 1000) / s.deliveries : null;
}

const us = (r: Row | undefined) => (r?.usPerDelivery === null || r?.usPerDelivery === undefined ? '' : r.usPerDelivery.toFixed(1));
const pct = (r: Row) => `${(r.share * 100).toFixed(1)}%`;

function table(title: string, list: Row[], top: number): string {
  const lines = [`${title}`, '', '| self ms | share | us/delivery | name |', '| ---: | ---: | ---: | --- |'];
  for (const r of list.slice(0, top)) lines.push(`| ${r.selfMs.toFixed(0)} | ${pct(r)} | ${us(r)} | ${r.name.replace(/\|/g, '\\|')} |`);
  return lines.join('\n');
}

/** A markdown report of one profile: packages, files and functions by self time. */
export function formatSummary(s: ProfileSummary, top = 25): string {
  const total = perDelivery(s);
  const scaled = s.cpuUsPerDelivery !== null ? ' (measured process CPU; rows scaled to it by their share of the samples)' : '';
  const per = total !== null ? `, ${total.toFixed(1)} us per delivery over ${s.deliveries} deliveries${scaled}` : '';
  return [
    `### ${s.file}`,
    '',
    `busy ${s.busyMs.toFixed(0)} ms (idle ${s.idleMs.toFixed(0)} ms)${per}`,
    '',
    table('By package', s.byPackage, top),
    '',
    table('By file', s.byFile, top),
    '',
    table('By function (self time)', s.byFunction, top),
  ].join('\n');
}

/** Packages side by side, per delivery, with what A spends beyond B. */
export function compareProfiles(a: ProfileSummary, b: ProfileSummary, labelA: string, labelB: string): string {
  const per = (_s: ProfileSummary, r: Row | undefined) => r?.usPerDelivery ?? 0;
  const names = [...new Set([...a.byPackage.map((r) => r.name), ...b.byPackage.map((r) => r.name)])];
  const lines = names
    .map((name) => {
      const ua = per(
        a,
        a.byPackage.find((r) => r.name === name),
      );
      const ub = per(
        b,
        b.byPackage.find((r) => r.name === name),
      );
      return { name, ua, ub, diff: ua - ub };
    })
    .sort((x, y) => y.diff - x.diff);
  const total = (s: ProfileSummary) => perDelivery(s) ?? 0;
  const out = [
    `| package | ${labelA} us/delivery | ${labelB} us/delivery | difference |`,
    '| --- | ---: | ---: | ---: |',
    ...lines
      .filter((l) => l.ua >= 0.5 || l.ub >= 0.5)
      .map((l) => `| ${l.name} | ${l.ua.toFixed(1)} | ${l.ub.toFixed(1)} | ${l.diff >= 0 ? '+' : ''}${l.diff.toFixed(1)} |`),
    `| **total (busy)** | ${total(a).toFixed(1)} | ${total(b).toFixed(1)} | ${(total(a) - total(b) >= 0 ? '+' : '') + (total(a) - total(b)).toFixed(1)} |`,
  ];
  return out.join('\n');
}

function main(argv: string[]): void {
  const args = argv.slice(2);
  const flag = (name: string) => {
    const i = args.indexOf(name);
    if (i < 0) return undefined;
    const v = args[i + 1];
    args.splice(i, 2);
    return v;
  };
  const deliveries = flag('--deliveries');
  const top = Number(flag('--top') ?? 25);
  const vs = flag('--vs');
  const vsDeliveries = flag('--vs-deliveries');
  const cpuUs = flag('--cpu-us');
  const vsCpuUs = flag('--vs-cpu-us');
  const file = args[0];
  if (!file) {
    process.stderr.write(
      'usage: profile-summary <a.cpuprofile> [--deliveries N] [--cpu-us X] [--top 25] [--vs <b.cpuprofile> --vs-deliveries M --vs-cpu-us Y]\n',
    );
    process.exitCode = 2;
    return;
  }
  const a = summarizeProfile(file, deliveries ? Number(deliveries) : null, cpuUs ? Number(cpuUs) : null);
  process.stdout.write(`${formatSummary(a, top)}\n`);
  if (vs) {
    const b = summarizeProfile(vs, vsDeliveries ? Number(vsDeliveries) : null, vsCpuUs ? Number(vsCpuUs) : null);
    process.stdout.write(`\n${formatSummary(b, top)}\n\n### Per delivery, by package\n\n${compareProfiles(a, b, 'A', 'B')}\n`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main(process.argv);
