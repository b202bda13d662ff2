import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

/** The repository root. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export const DASHBOARD_FILE = 'grafana/dashboards/action-relay.json';
export const PROMETHEUS_FILE = 'grafana/prometheus/prometheus.yml';
export const ALERTS_FILE = 'grafana/prometheus/alerts.yml';

export function readText(rel: string): string {
  return readFileSync(join(ROOT, rel), 'utf8');
}

/** A YAML file of the repository; `<<` merge keys resolved as Docker Compose does. */
export function readYaml<T = Record<string, unknown>>(rel: string): T {
  return parse(readText(rel), { merge: true }) as T;
}

export interface PanelTarget {
  refId: string;
  expr: string;
  legendFormat?: string;
  datasource?: { type: string; uid: string };
}

export interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { type: string; uid: string };
  targets?: PanelTarget[];
  panels?: Panel[];
  fieldConfig?: { defaults: { unit?: string; thresholds?: { steps: { color: string; value: number | null }[] } } };
  links?: { title: string; url: string }[];
}

export interface Dashboard {
  uid: string;
  title: string;
  panels: Panel[];
  templating: {
    list: {
      name: string;
      type: string;
      query: unknown;
      datasource?: { uid: string };
      allValue?: string;
      current?: { value: unknown };
    }[];
  };
}

export function readDashboard(): Dashboard {
  return JSON.parse(readText(DASHBOARD_FILE)) as Dashboard;
}

/** Every panel that holds queries, rows unfolded. */
export function dashboardPanels(dashboard: Dashboard = readDashboard()): Panel[] {
  return dashboard.panels.flatMap((p) => (p.type === 'row' ? (p.panels ?? []) : [p]));
}

export interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface RecordingRule {
  record: string;
  expr: string;
  labels?: Record<string, string>;
}

function ruleFile(): (AlertRule | RecordingRule)[] {
  const doc = readYaml<{ groups: { name: string; rules: (AlertRule | RecordingRule)[] }[] }>(ALERTS_FILE);
  return doc.groups.flatMap((g) => g.rules);
}

/** The alerting rules of alerts.yml. */
export function alertRules(): AlertRule[] {
  return ruleFile().filter((r): r is AlertRule => 'alert' in r);
}

/** The recording rules of alerts.yml (the SLO ratios and burn rates). */
export function recordingRules(): RecordingRule[] {
  return ruleFile().filter((r): r is RecordingRule => 'record' in r);
}

/**
 * The exported metrics an expression reads: recorded series (`a:b:c`, made by a recording rule)
 * are replaced by what their rule reads, recursively.
 */
export function exportedMetricNames(expr: string): string[] {
  const recorded = new Map(recordingRules().map((r) => [r.record, r.expr]));
  const out = new Set<string>();
  const visit = (e: string, depth: number) => {
    for (const n of metricNames(e)) {
      const rule = recorded.get(n);
      if (rule !== undefined && depth < 5) visit(rule, depth + 1);
      else if (rule === undefined) out.add(n);
    }
  };
  visit(expr, 0);
  return [...out].sort();
}

/** Series Prometheus makes itself (not exported by action-relay). */
export const PROMETHEUS_SYNTHETIC = new Set(['up', 'scrape_duration_seconds', 'scrape_samples_scraped', 'ALERTS']);

const NOT_METRICS = new Set([
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'and',
  'or',
  'unless',
  'bool',
  'offset',
  'inf',
  'nan',
]);

/**
 * The metric names a PromQL expression reads: what is left once strings, label matchers,
 * ranges, grouping lists, functions, aggregations and keywords are taken out. Enough for the
 * expressions of our dashboard and rules (and checked against them in ops-files.test.ts).
 */
export function metricNames(expr: string): string[] {
  let s = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, ' ');
  s = s.replace(/\{[^}]*\}/g, ' ').replace(/\[[^\]]*\]/g, ' ');
  s = s.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = new Set<string>();
  for (const m of s.matchAll(/(?<![A-Za-z0-9_:.$])[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const word = m[0];
    const rest = s.slice((m.index ?? 0) + word.length).trimStart();
    if (rest.startsWith('(') || NOT_METRICS.has(word.toLowerCase())) continue;
    names.add(word);
  }
  return [...names].sort();
}
