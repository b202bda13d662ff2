import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { HotHistogram, TalliedCounter } from '../../src/metrics/hot-series.js';

const BUCKETS = [0.005, 0.01, 0.25, 1, 30];
// On a bound, between bounds, below the first, above the last, and a label value to escape.
const OBSERVATIONS: [string, number][] = [
  ['acme', 0.005],
  ['acme', 0.007],
  ['acme', 0.0001],
  ['acme', 45],
  ['acme', 1],
  ['say "hi"\\\n', 0.3],
  ['other', 0.25],
  ['other', 0],
];

describe('HotHistogram', () => {
  it('exports the same text as a prom-client Histogram given the same observations', async () => {
    const hotRegistry = new Registry();
    const promRegistry = new Registry();
    const config = { name: 'x_seconds', help: 'Help with "quotes" and \\ backslash', labelNames: ['action'] as const, buckets: BUCKETS };
    const hot = new HotHistogram({ ...config, registers: [hotRegistry] });
    const prom = new Histogram({ ...config, labelNames: ['action'], registers: [promRegistry] });
    for (const [action, v] of OBSERVATIONS) {
      hot.labels({ action }).observe(v);
      prom.observe({ action }, v);
    }
    hot.observe({ action: 'acme' }, 2);
    prom.observe({ action: 'acme' }, 2);
    const text = await hotRegistry.metrics();
    expect(text).toBe(await promRegistry.metrics());
    expect(text).toContain('x_seconds_bucket{le="0.005",action="acme"} 2');
    expect(text).toContain('x_seconds_bucket{le="+Inf",action="acme"} 6');
  });

  it('refuses a value that is not a number and a label it was not given', () => {
    const h = new HotHistogram({ name: 'y_seconds', help: 'h', labelNames: ['action'], buckets: BUCKETS, registers: [new Registry()] });
    expect(() => h.labels({ action: 'a' }).observe(Number.NaN)).toThrow(/not a valid number/);
    expect(() => h.labels({ action: 'a', extra: 'b' } as { action: string })).toThrow(/label "extra"/);
  });

  it('refuses the names prom-client refuses, le included', () => {
    const make = (name: string, label: string) => () =>
      new HotHistogram({ name, help: 'h', labelNames: [label], buckets: BUCKETS, registers: [new Registry()] });
    expect(make('bad-name', 'action')).toThrow(/metric name/);
    expect(make('ok_seconds', 'le')).toThrow(/label name "le"/);
    expect(make('ok_seconds', '1x')).toThrow(/label name/);
  });

  it('reset zeroes the series and keeps a child handed out before it', async () => {
    const registry = new Registry();
    const h = new HotHistogram({ name: 'z_seconds', help: 'h', labelNames: ['action'], buckets: BUCKETS, registers: [registry] });
    const child = h.labels({ action: 'a' });
    child.observe(0.5);
    registry.resetMetrics();
    child.observe(0.004);
    const text = await registry.metrics();
    expect(text).toContain('z_seconds_count{action="a"} 1');
    expect(text).toContain('z_seconds_bucket{le="0.005",action="a"} 1');
    expect(text).toContain('z_seconds_sum{action="a"} 0.004');
  });
});

describe('TalliedCounter', () => {
  it('adds its tallies at scrape time, once, beside increments with labels', async () => {
    const registry = new Registry();
    const c = new TalliedCounter({ name: 'jobs_total', help: 'h', labelNames: ['action', 'outcome'], registers: [registry] });
    const delivered = c.tally({ action: 'a', outcome: 'delivered' });
    // A tally is created at 0, like a series initialised with inc(labels, 0).
    expect(await registry.getSingleMetricAsString('jobs_total')).toContain('jobs_total{action="a",outcome="delivered"} 0');
    delivered.inc();
    delivered.inc();
    c.inc({ action: 'a', outcome: 'delivered' });
    c.inc({ action: 'a', outcome: 'dead' }, 3);
    // The same labels give the same series, whichever tally counts them.
    c.tally({ outcome: 'delivered', action: 'a' }).inc();
    const first = await registry.getSingleMetricAsString('jobs_total');
    expect(first).toContain('jobs_total{action="a",outcome="delivered"} 4');
    expect(first).toContain('jobs_total{action="a",outcome="dead"} 3');
    // A second scrape adds nothing that was already added.
    expect(await registry.getSingleMetricAsString('jobs_total')).toBe(first);
    delivered.inc();
    expect(await registry.getSingleMetricAsString('jobs_total')).toContain('jobs_total{action="a",outcome="delivered"} 5');
  });

  it('drops tallies not yet added when the registry is reset', async () => {
    const registry = new Registry();
    const c = new TalliedCounter({ name: 'r_total', help: 'h', labelNames: ['action'], registers: [registry] });
    const t = c.tally({ action: 'a' });
    t.inc();
    registry.resetMetrics();
    t.inc();
    expect(await registry.getSingleMetricAsString('r_total')).toContain('r_total{action="a"} 1');
  });

  it('refuses a label it was not given, as a Counter does', () => {
    const c = new TalliedCounter({ name: 'k_total', help: 'h', labelNames: ['action'], registers: [new Registry()] });
    const plain = new Counter({ name: 'k_total', help: 'h', labelNames: ['action'], registers: [new Registry()] });
    expect(() => plain.inc({ nope: 'x' } as never)).toThrow();
    expect(() => c.tally({ nope: 'x' } as never)).toThrow(/nope/);
  });
});
