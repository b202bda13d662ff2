import { Counter, type CounterConfiguration, type Metric, type Registry } from 'prom-client';

/*
 * Series moved by every delivery, at no per-event label cost. prom-client hashes the labels into a
 * string and looks the series up on every inc and observe, a labels() child included, and a
 * histogram also turns its bucket bound into a property name: together ~5 us per delivery of a
 * saturated worker. Here a child is the series itself, looked up once per action.
 */

/** One series of a counter, counted in place and added to the counter when it is scraped. */
export interface Tally {
  inc(): void;
}

/**
 * A prom-client Counter whose tallies are added to it at scrape time (its `collect`), so a
 * scrape sees every increment made before it. inc() with labels works as on any Counter.
 */
export class TalliedCounter<T extends string> extends Counter<T> {
  private readonly tallies = new Map<string, { labels: Partial<Record<T, string>>; n: number }>();

  constructor(config: Omit<CounterConfiguration<T>, 'collect'>) {
    super({
      ...config,
      collect() {
        (this as TalliedCounter<T>).addTallies();
      },
    });
  }

  /** The series of these labels, counted without hashing them each time. */
  tally(labels: Partial<Record<T, string>>): Tally {
    const key = JSON.stringify(labels);
    let t = this.tallies.get(key);
    if (!t) {
      // Checks the label names now, as inc() would.
      this.inc(labels, 0);
      t = { labels: { ...labels }, n: 0 };
      this.tallies.set(key, t);
    }
    const series = t;
    return {
      inc() {
        series.n++;
      },
    };
  }

  /** As Counter.reset, and the tallies not yet added are dropped with the rest. */
  override reset(): void {
    super.reset();
    // Called by prom-client's constructor too, before the tallies exist.
    for (const t of this.tallies?.values() ?? []) t.n = 0;
  }

  private addTallies(): void {
    for (const t of this.tallies.values()) {
      if (t.n === 0) continue;
      const n = t.n;
      t.n = 0;
      this.inc(t.labels, n);
    }
  }
}

/** One series of a histogram. */
export interface HistogramSeries {
  observe(value: number): void;
}

class Series implements HistogramSeries {
  /** Observations per bucket, not cumulative; the last slot counts those above every bound. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(
    readonly labels: Record<string, string>,
    private readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    if (!Number.isFinite(value)) throw new TypeError(`Value is not a valid number: ${value}`);
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > (bounds[i] as number)) i++;
    (this.counts[i] as number)++;
    this.sum += value;
    this.count++;
  }
}

export interface HistogramExport {
  name: string;
  help: string;
  type: 'histogram';
  values: { labels: Record<string, string | number>; value: number; metricName: string }[];
  aggregator: 'sum';
}

export interface HotHistogramConfig<T extends string> {
  name: string;
  help: string;
  labelNames: readonly T[];
  buckets: readonly number[];
  registers: Registry[];
}

/**
 * A histogram registered like any prom-client metric, exported in the same text (the test holds
 * it to prom-client's Histogram), whose labels() child is its series: observe() is a bucket search
 * and three additions.
 */
export class HotHistogram<T extends string> {
  readonly type = 'histogram' as const;
  readonly aggregator = 'sum' as const;
  readonly name: string;
  readonly help: string;
  private readonly labelNames: readonly T[];
  private readonly bounds: readonly number[];
  private readonly series = new Map<string, Series>();

  constructor(config: HotHistogramConfig<T>) {
    // The checks prom-client's own metrics make.
    if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(config.name)) throw new Error(`invalid metric name "${config.name}"`);
    for (const label of config.labelNames) {
      if (!/^[a-zA-Z_][a-zA-Z0-9_]*$/.test(label) || label === 'le') throw new Error(`invalid label name "${label}"`);
    }
    this.name = config.name;
    this.help = config.help;
    this.labelNames = config.labelNames;
    this.bounds = [...config.buckets].sort((a, b) => a - b);
    for (const registry of config.registers) registry.registerMetric(this as unknown as Metric);
  }

  labels(labels: Record<T, string>): HistogramSeries {
    for (const name of Object.keys(labels)) {
      if (!this.labelNames.includes(name as T))
        throw new Error(`label "${name}" is not one of ${this.name}'s: ${this.labelNames.join(', ')}`);
    }
    const key = JSON.stringify(this.labelNames.map((n) => labels[n]));
    let s = this.series.get(key);
    if (!s) {
      s = new Series({ ...labels }, this.bounds);
      this.series.set(key, s);
    }
    return s;
  }

  observe(labels: Record<T, string>, value: number): void {
    this.labels(labels).observe(value);
  }

  /** Zeroes every series in place (children handed out stay valid). */
  reset(): void {
    for (const s of this.series.values()) {
      s.counts.fill(0);
      s.sum = 0;
      s.count = 0;
    }
  }

  /** What prom-client's registry reads of a metric (the shape its own Histogram gives). */
  async get(): Promise<HistogramExport> {
    const values: HistogramExport['values'] = [];
    const bucket = `${this.name}_bucket`;
    for (const s of this.series.values()) {
      let acc = 0;
      this.bounds.forEach((le, i) => {
        acc += s.counts[i] as number;
        values.push({ labels: { le, ...s.labels }, value: acc, metricName: bucket });
      });
      values.push({ labels: { le: '+Inf', ...s.labels }, value: s.count, metricName: bucket });
      values.push({ labels: { ...s.labels }, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { ...s.labels }, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: 'histogram', values, aggregator: 'sum' };
  }
}
