import { existsSync, statSync } from 'node:fs';
import { join, posix } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { buildCli } from '../../src/cli/cli.js';
import { loadConfig } from '../../src/config/config.js';
import { assertSafeBind } from '../../src/api/api-server.js';
import { parseActionDefinition } from '../../src/actions/compile-action.js';
import { loadActionFiles } from '../../src/actions/action-files.js';
import {
  ALERTS_FILE,
  PROMETHEUS_FILE,
  ROOT,
  alertRules,
  dashboardPanels,
  recordingRules,
  type Panel,
  metricNames,
  readDashboard,
  readText,
  readYaml,
} from '../support/ops-files.js';

// Docker cannot run here: these tests hold docker-compose.yml, the Dockerfile and the Grafana and
// Prometheus files to each other and to the code, so that a rename on one side fails here.

/** Docker Compose interpolation: $$, ${VAR}, ${VAR:-default}, ${VAR:?error}; anything else is an error. */
function interpolate<T>(value: T, vars: Record<string, string>): T {
  if (typeof value === 'string') {
    return value.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([-?])([^}]*))?\}|\$/g, (m, name?: string, op?: string, arg?: string) => {
      if (m === '$$') return '$';
      if (!name) throw new Error(`bare $ in "${value}": write $$ for a literal dollar`);
      const v = vars[name];
      if (v !== undefined && v !== '') return v;
      if (op === '?') throw new Error(`${name} is required: ${arg}`);
      return op === '-' ? (arg ?? '') : '';
    }) as T;
  }
  if (Array.isArray(value)) return value.map((v: unknown) => interpolate(v, vars)) as T;
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolate(v, vars)])) as T;
  }
  return value;
}

interface Service {
  image?: string;
  build?: string;
  command?: string[];
  entrypoint?: string[];
  environment?: Record<string, string>;
  ports?: string[];
  volumes?: string[];
  configs?: { source: string; target: string }[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[]; interval?: string; timeout?: string; retries?: number };
  deploy?: { replicas?: number };
  profiles?: string[];
}

interface Compose {
  services: Record<string, Service>;
  volumes: Record<string, unknown>;
  configs: Record<string, { content?: string; file?: string }>;
}

const ADMIN_TOKEN = 'a-test-admin-token-of-32-chars!!';
const compose = interpolate(readYaml<Compose>('docker-compose.yml'), { ADMIN_TOKEN });
const services = compose.services;

function service(name: string): Service {
  const s = services[name];
  if (!s) throw new Error(`docker-compose.yml has no service ${name}`);
  return s;
}

/** host port -> container port of "127.0.0.1:8080:8080". */
function ports(s: Service): { host: string; published: number; target: number }[] {
  return (s.ports ?? []).map((p) => {
    const parts = p.split(':');
    expect(parts, `port "${p}" names its bind address`).toHaveLength(3);
    return { host: parts[0] as string, published: Number(parts[1]), target: Number(parts[2]) };
  });
}

/** The port a healthcheck command's URL names. */
function healthUrl(s: Service): URL {
  const text = (s.healthcheck?.test ?? []).join(' ');
  const m = /https?:\/\/[^'"\s)]+/.exec(text);
  if (!m) throw new Error(`healthcheck has no URL: ${text}`);
  return new URL(m[0]);
}

describe('docker-compose.yml', () => {
  it('has the services of the issue, each with a healthcheck (the one-shot traffic client excepted)', () => {
    expect(Object.keys(services).sort()).toEqual([
      'alertmanager',
      'api',
      'grafana',
      'prometheus',
      'receiver',
      'redis',
      'traffic',
      'worker',
    ]);
    for (const [name, s] of Object.entries(services)) {
      if (name === 'traffic') {
        expect(s.profiles, 'sample traffic only on request').toEqual(['traffic']);
        continue;
      }
      expect(s.healthcheck?.test?.[0], `${name} healthcheck`).toBe('CMD');
      expect(s.healthcheck?.test?.length, `${name} healthcheck command`).toBeGreaterThan(1);
    }
  });

  it('depends_on names existing services, and waits for health only where a healthcheck exists', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const [dep, { condition }] of Object.entries(s.depends_on ?? {})) {
        expect(services[dep], `${name} depends on ${dep}`).toBeDefined();
        expect(['service_started', 'service_healthy', 'service_completed_successfully']).toContain(condition);
        if (condition === 'service_healthy') expect(service(dep).healthcheck, `${dep} has a healthcheck`).toBeDefined();
      }
    }
    // Every process that talks to Redis waits for it; Prometheus for what it scrapes; Grafana for Prometheus.
    expect(service('api').depends_on?.redis?.condition).toBe('service_healthy');
    expect(service('worker').depends_on?.redis?.condition).toBe('service_healthy');
    expect(Object.keys(service('prometheus').depends_on ?? {}).sort()).toEqual(['alertmanager', 'api', 'worker']);
    expect(Object.keys(service('grafana').depends_on ?? {})).toEqual(['prometheus']);
  });

  it('redis persists (appendonly, a named volume on /data) and the workers run 2 replicas', () => {
    const redis = service('redis');
    expect(redis.command?.join(' ')).toContain('--appendonly yes');
    const data = (redis.volumes ?? []).find((v) => v.split(':')[1] === '/data');
    expect(data, 'a volume on /data').toBeDefined();
    expect(Object.keys(compose.volumes)).toContain(data?.split(':')[0]);
    expect(service('worker').deploy?.replicas).toBe(2);
    // Two replicas cannot publish one host port: the workers are reached on the compose network.
    expect(service('worker').ports).toBeUndefined();
  });

  it('mounts only paths that exist, and declares every named volume', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const v of s.volumes ?? []) {
        const [source] = v.split(':') as [string];
        if (source.startsWith('./')) expect(existsSync(join(ROOT, source)), `${name} mounts ${source}`).toBe(true);
        else expect(Object.keys(compose.volumes), `${name} volume ${source}`).toContain(source);
      }
      if (s.build !== undefined) expect(existsSync(join(ROOT, s.build, 'Dockerfile')), `${name} builds ${s.build}`).toBe(true);
    }
  });

  it('publishes ports on loopback only, on the ports the processes listen on', () => {
    for (const s of Object.values(services)) for (const p of ports(s)) expect(p.host).toBe('127.0.0.1');
    const api = service('api');
    expect(ports(api).map((p) => p.target)).toEqual([Number(api.environment?.PORT)]);
    expect(ports(service('prometheus')).map((p) => p.target)).toEqual([9090]);
    expect(ports(service('grafana')).map((p) => p.target)).toEqual([3000]);
  });

  it('healthchecks ask routes that exist, on the ports the processes serve', () => {
    const api = service('api');
    const worker = service('worker');
    const receiver = service('receiver');
    expect(healthUrl(api).port).toBe(api.environment?.PORT);
    expect(healthUrl(api).pathname).toBe('/readyz');
    expect(healthUrl(worker).port).toBe(worker.environment?.METRICS_PORT);
    expect(healthUrl(worker).pathname).toBe('/healthz');
    expect(readText('src/api/api-server.ts')).toContain("app.get('/readyz'");
    expect(readText('src/metrics/metrics-server.ts')).toContain("path === '/healthz'");
    const receiverPort = receiver.command?.[receiver.command.indexOf('--port') + 1];
    expect(healthUrl(receiver).port).toBe(receiverPort);
    expect(healthUrl(service('prometheus')).port).toBe('9090');
    expect(healthUrl(service('grafana')).port).toBe('3000');
    expect(healthUrl(service('grafana')).pathname).toBe('/api/health');
    // The node images have no curl: the relay services check themselves with node's fetch.
    for (const name of ['api', 'worker', 'receiver']) expect(service(name).healthcheck?.test.slice(0, 3)).toEqual(['CMD', 'node', '-e']);
  });

  it('each action-relay service runs a CLI command that exists, with options it has, and an environment the config accepts', () => {
    const cli = buildCli({ out: () => undefined, err: () => undefined, env: {} });
    for (const name of ['receiver', 'api', 'worker']) {
      const s = service(name);
      expect(s.image, `${name} runs the image the Dockerfile builds`).toBe('action-relay:local');
      const [command, ...args] = s.command ?? [];
      const cmd = cli.commands.find((c) => c.name() === command);
      expect(cmd, `${name}: action-relay ${command}`).toBeDefined();
      const longs = new Set(cmd?.options.map((o) => o.long));
      for (const a of args.filter((x) => x.startsWith('--'))) expect(longs, `${name}: ${command} ${a}`).toContain(a);
      // A bad value would stop the process at start with a message naming the variable.
      const config = loadConfig(s.environment ?? {});
      if (name === 'api') expect(() => assertSafeBind(config.HOST, config.ADMIN_TOKEN)).not.toThrow();
      if (name !== 'receiver') expect(config.REDIS_URL).toBe('redis://redis:6379');
    }
    const receiver = service('receiver').command ?? [];
    expect(receiver[receiver.indexOf('--host') + 1], 'the receiver must answer the workers').toBe('0.0.0.0');
    expect(service('worker').environment?.HOST, 'the metrics listener must answer Prometheus').toBe('0.0.0.0');
    expect(service('api').environment?.HOST).toBe('0.0.0.0');
    // The compose file requires ADMIN_TOKEN rather than start an open API.
    expect(() => interpolate(readYaml<Compose>('docker-compose.yml'), {})).toThrow(/ADMIN_TOKEN is required/);
  });

  it('the sample actions are those of examples/, pointed at the receiver service, allowed by EGRESS_ALLOW_HOSTS, with their secrets on the workers', async () => {
    const api = service('api');
    const dir = api.environment?.ACTIONS_DIR ?? '';
    const mounted = api.configs ?? [];
    expect(mounted.length).toBeGreaterThan(0);
    const receiverPort = (service('receiver').command ?? [])[(service('receiver').command ?? []).indexOf('--port') + 1];
    const examples = new Map((await loadActionFiles(join(ROOT, 'examples'))).map((f) => [parseActionDefinition(f.definition).id, f]));
    const ids: string[] = [];
    for (const { source, target } of mounted) {
      expect(posix.dirname(target), `${source} lands in ACTIONS_DIR`).toBe(dir);
      expect(['.yaml', '.yml', '.json']).toContain(posix.extname(target));
      const content = compose.configs[source]?.content;
      expect(content, `config ${source}`).toBeTypeOf('string');
      const def = parseActionDefinition(parse(content as string));
      ids.push(def.id);
      const url = new URL(def.endpoint.url);
      expect(url.hostname, `${def.id} calls the receiver service`).toBe('receiver');
      expect(url.port).toBe(receiverPort);
      for (const name of ['api', 'worker']) {
        expect(service(name).environment?.EGRESS_ALLOW_HOSTS?.split(','), `${name} may call the receiver`).toContain('receiver');
      }
      // The same definition as the example the demo runs, but for the receiver's address.
      const example = examples.get(def.id);
      expect(example, `examples/ has ${def.id}`).toBeDefined();
      const expected = JSON.parse(
        JSON.stringify(example?.definition).replaceAll('http://127.0.0.1:4010', `http://receiver:${receiverPort}`),
      ) as unknown;
      expect(def).toEqual(parseActionDefinition(expected));
      // Secrets are resolved by the worker at call time.
      for (const m of JSON.stringify(def).matchAll(/\{"env":"([A-Z0-9_]+)"\}/g)) {
        expect(Object.keys(service('worker').environment ?? {}), `${def.id} needs ${m[1]} on the workers`).toContain(m[1]);
      }
    }
    expect(ids.sort()).toEqual([...examples.keys()].sort());
  });

  it('builds with a multi-stage, non-root Dockerfile whose entry point is the compiled CLI', () => {
    const lines = readText('Dockerfile')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    const stages: { name: string; lines: string[] }[] = [];
    for (const l of lines) {
      const from = /^FROM\s+(\S+)\s+AS\s+(\S+)$/i.exec(l);
      if (from) stages.push({ name: from[2] as string, lines: [] });
      else stages.at(-1)?.lines.push(l);
    }
    expect(stages.length, 'FROM ... AS <stage> twice').toBe(2);
    const [build, runtime] = stages as [(typeof stages)[0], (typeof stages)[0]];
    const has = (stage: (typeof stages)[0], re: RegExp) => stage.lines.some((l) => re.test(l));
    expect(has(build, /^RUN npm ci\b/)).toBe(true);
    expect(has(build, /^RUN (npx tsc -p tsconfig\.json|npm run build)/)).toBe(true);
    expect(has(runtime, /^RUN npm ci .*--omit=dev/)).toBe(true);
    expect(has(runtime, /^RUN .*(tsc|npm run build)/), 'no build in the runtime stage').toBe(false);
    expect(has(runtime, new RegExp(`^COPY --from=${build.name} /app/dist/`))).toBe(true);
    const user = runtime.lines.filter((l) => l.startsWith('USER ')).at(-1);
    expect(user, 'the runtime stage sets a user').toBeDefined();
    expect(['root', '0']).not.toContain(user?.split(/\s+/)[1]);
    // tsc's rootDir "." and outDir "dist" turn workers/action-relay.ts into dist/workers/action-relay.js.
    const tsconfig = JSON.parse(readText('tsconfig.json')) as { compilerOptions: { rootDir: string; outDir: string } };
    expect(tsconfig.compilerOptions).toMatchObject({ rootDir: '.', outDir: 'dist' });
    expect(existsSync(join(ROOT, 'workers/action-relay.ts'))).toBe(true);
    const entry = runtime.lines.find((l) => l.startsWith('ENTRYPOINT'));
    expect(JSON.parse(entry?.slice('ENTRYPOINT'.length) ?? '[]')).toEqual(['node', 'dist/workers/action-relay.js']);
    const pkg = JSON.parse(readText('package.json')) as { bin: Record<string, string> };
    expect(pkg.bin['action-relay']).toBe('dist/workers/action-relay.js');
    // Every COPY from the build context exists and is not excluded by .dockerignore.
    const ignored = new Set(
      readText('.dockerignore')
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l && !l.startsWith('#')),
    );
    for (const l of lines.filter((x) => x.startsWith('COPY ') && !x.includes('--from='))) {
      for (const src of l.split(/\s+/).slice(1, -1)) {
        expect(existsSync(join(ROOT, src)), `COPY ${src}`).toBe(true);
        expect(ignored.has(src), `${src} is in .dockerignore`).toBe(false);
      }
    }
    expect(ignored.has('node_modules') && ignored.has('dist'), 'host builds stay out of the image').toBe(true);
  });
});

describe('Prometheus configuration', () => {
  const prom = readYaml<{
    global: { scrape_interval: string };
    rule_files: string[];
    alerting?: { alertmanagers: { static_configs: { targets: string[] }[] }[] };
    scrape_configs: {
      job_name: string;
      static_configs?: { targets: string[] }[];
      dns_sd_configs?: { names: string[]; type: string; port: number }[];
    }[];
  }>(PROMETHEUS_FILE);
  const job = (name: string) => prom.scrape_configs.find((j) => j.job_name === name);

  it('scrapes the api and every worker replica on their compose ports', () => {
    expect(job('action-relay-api')?.static_configs?.[0]?.targets).toEqual([`api:${service('api').environment?.PORT}`]);
    // Docker's DNS answers a scaled service's name with one A record per replica.
    expect(job('action-relay-worker')?.dns_sd_configs).toEqual([
      { names: ['worker'], type: 'A', port: Number(service('worker').environment?.METRICS_PORT), refresh_interval: '15s' },
    ]);
  });

  it('is mounted where its command line reads it, with the alert rules beside it', () => {
    const p = service('prometheus');
    const mount = (p.volumes ?? []).map((v) => v.split(':')).find(([src]) => src === `./${posix.dirname(PROMETHEUS_FILE)}`);
    expect(mount, 'grafana/prometheus is mounted').toBeDefined();
    const configFlag = p.command?.find((c) => c.startsWith('--config.file='))?.split('=')[1];
    expect(configFlag).toBe(posix.join(mount?.[1] ?? '', posix.basename(PROMETHEUS_FILE)));
    expect(prom.rule_files).toEqual([posix.basename(ALERTS_FILE)]);
    expect(statSync(join(ROOT, posix.dirname(PROMETHEUS_FILE), prom.rule_files[0] as string)).isFile()).toBe(true);
  });

  it('sends alerts to the Alertmanager service, whose config is mounted where its command line reads it and checked in CI', () => {
    const am = service('alertmanager');
    const [port] = ports(am);
    expect(prom.alerting?.alertmanagers[0]?.static_configs[0]?.targets).toEqual([`alertmanager:${port?.target}`]);
    expect(healthUrl(am).port).toBe(String(port?.target));
    const mount = (am.volumes ?? []).map((v) => v.split(':')).find(([src]) => src === './grafana/alertmanager');
    const configFlag = am.command?.find((c) => c.startsWith('--config.file='))?.split('=')[1];
    expect(configFlag).toBe(posix.join(mount?.[1] ?? '', 'alertmanager.yml'));
    expect(readText('.ci/run')).toContain('amtool check-config grafana/alertmanager/alertmanager.yml');
    // Every severity the rules use has a route; inhibitions name alerts that exist.
    const config = readYaml<{
      route: { receiver: string; routes: { matchers: string[]; receiver: string }[] };
      receivers: { name: string }[];
      inhibit_rules: { source_matchers: string[]; target_matchers: string[] }[];
    }>('grafana/alertmanager/alertmanager.yml');
    const receivers = config.receivers.map((r) => r.name);
    expect(config.route.routes.find((r) => r.matchers.includes('severity="critical"'))?.receiver).toBe('pager');
    expect(config.route.receiver).toBe('ticket');
    for (const r of [config.route, ...config.route.routes]) expect(receivers).toContain(r.receiver);
    const names = alertRules().map((r) => r.alert);
    for (const rule of config.inhibit_rules) {
      for (const m of [...rule.source_matchers, ...rule.target_matchers]) {
        const re = /^alertname=~?"(.+)"$/.exec(m);
        if (!re) continue;
        const matched = names.filter((n) => new RegExp(`^(?:${re[1]})$`).test(n));
        expect(matched.length, m).toBeGreaterThan(0);
      }
    }
  });
});

describe('Grafana provisioning and dashboard', () => {
  const ds = readYaml<{ datasources: { uid: string; type: string; url: string; jsonData?: { timeInterval?: string } }[] }>(
    'grafana/provisioning/datasources/prometheus.yml',
  ).datasources;
  const providers = readYaml<{ providers: { type: string; options: { path: string } }[] }>(
    'grafana/provisioning/dashboards/action-relay.yml',
  ).providers;
  const grafana = service('grafana');
  const mountOf = (source: string) => (grafana.volumes ?? []).map((v) => v.split(':')).find(([src]) => src === source)?.[1];
  const dashboard = readDashboard();
  const panels = dashboardPanels(dashboard);

  it('provisions one Prometheus datasource, at the prometheus service, with the uid every panel uses', () => {
    expect(mountOf('./grafana/provisioning')).toBe('/etc/grafana/provisioning');
    expect(ds).toHaveLength(1);
    const [prometheus] = ds as [(typeof ds)[0]];
    expect(prometheus.type).toBe('prometheus');
    expect(new URL(prometheus.url).host).toBe(`prometheus:${ports(service('prometheus'))[0]?.target}`);
    expect(prometheus.jsonData?.timeInterval).toBe('15s');
    for (const p of panels) {
      expect(p.datasource?.uid, p.title).toBe('${datasource}');
      for (const t of p.targets ?? []) expect(t.datasource?.uid, `${p.title} ${t.refId}`).toBe('${datasource}');
    }
    // Panels follow the datasource variable, whose default is the provisioned Prometheus.
    const variable = dashboard.templating.list.find((v) => v.name === 'datasource');
    expect(variable?.type).toBe('datasource');
    expect(variable?.query).toBe('prometheus');
    expect(variable?.current?.value).toBe(prometheus.uid);
    for (const v of dashboard.templating.list.filter((x) => x.type === 'query')) {
      expect(v.datasource?.uid, `variable ${v.name}`).toBe('${datasource}');
    }
  });

  it('loads the dashboards from where compose mounts grafana/dashboards, and makes ours the home', () => {
    const target = mountOf('./grafana/dashboards');
    expect(providers).toHaveLength(1);
    expect(providers[0]?.type).toBe('file');
    expect(providers[0]?.options.path).toBe(target);
    const home = grafana.environment?.GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH ?? '';
    expect(posix.dirname(home)).toBe(target);
    expect(existsSync(join(ROOT, 'grafana/dashboards', posix.basename(home)))).toBe(true);
  });

  it('has the panels the issue asks for, each with queries, unique ids and no overlap', () => {
    const titles = panels.map((p) => p.title);
    for (const wanted of [
      /deliveries per second by action and outcome/i,
      /error ratio by action/i,
      /HTTP latency p50 \/ p95 \/ p99 by action/i,
      /ready-to-delivery latency/i,
      /queue depth by state/i,
      /DLQ size/i,
      /DLQ growth/i,
      /retries .* by reason/i,
      /rate-limited deferrals/i,
      /rate-limit wait/i,
      /in flight vs WORKER_CONCURRENCY/i,
      /queue depth by partition/i,
      /results stream length and consumer lag/i,
      /enqueue rate by result/i,
      /enqueue duration/i,
      /error-budget burn rate/i,
      /circuit state/i,
      /worker process CPU/i,
      /worker process memory/i,
      /oldest waiting/i,
      /token refreshes/i,
    ]) {
      expect(
        titles.filter((t) => wanted.test(t)),
        String(wanted),
      ).toHaveLength(1);
    }
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
    for (const p of panels) {
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets ?? []) expect(t.expr.trim(), `${p.title} ${t.refId}`).not.toBe('');
    }
    const cells = new Set<string>();
    for (const { gridPos: g, title } of panels) {
      expect(g.x + g.w, title).toBeLessThanOrEqual(24);
      for (let x = g.x; x < g.x + g.w; x++) {
        for (let y = g.y; y < g.y + g.h; y++) {
          expect(cells.has(`${x},${y}`), `${title} overlaps at ${x},${y}`).toBe(false);
          cells.add(`${x},${y}`);
        }
      }
    }
    const latency = panels.find((p) => /HTTP latency/.test(p.title))?.targets?.map((t) => t.expr) ?? [];
    expect(latency.map((e) => /histogram_quantile\((0\.\d+),/.exec(e)?.[1])).toEqual(['0.5', '0.95', '0.99']);
  });

  it('filters by an action variable (label_values, All = .*) wherever a metric has an action label', () => {
    const v = dashboard.templating.list.find((x) => x.name === 'action');
    expect(v?.type).toBe('query');
    expect(JSON.stringify(v?.query)).toContain('label_values(action_relay_jobs_total, action)');
    expect(v?.allValue).toBe('.*');
    // The metrics whose label set includes `action` (relay-metrics.ts).
    const source = readText('src/metrics/relay-metrics.ts');
    const withAction = [...source.matchAll(/name: '(action_relay_[a-z_]+)',[^}]*?labelNames: \[[^\]]*'action'/gs)].map(
      (m) => m[1] as string,
    );
    expect(withAction).toContain('action_relay_jobs_total');
    // The health row's stats answer for every action at once.
    for (const p of panels.filter((x) => x.type !== 'stat')) {
      for (const t of p.targets ?? []) {
        const reads = metricNames(t.expr).map((n) => n.replace(/_(bucket|sum|count)$/, ''));
        if (reads.some((n) => withAction.includes(n))) expect(t.expr, `${p.title} ${t.refId}`).toContain('action=~"$action"');
      }
    }
  });

  it('opens with a health row of stat panels whose thresholds are the alert thresholds, each linked to its runbook', () => {
    const top = dashboard.panels.filter((p) => p.gridPos.y <= 1);
    expect(top[0]?.type).toBe('row');
    const stats = dashboard.panels.filter((p) => p.type === 'stat');
    expect(stats.every((p) => p.gridPos.y === 1 && p.gridPos.h === 4)).toBe(true);
    const titles = stats.map((p) => p.title);
    for (const wanted of [
      /burn/i,
      /success/i,
      /deliveries per second/i,
      /oldest ready job/i,
      /dead letters/i,
      /workers up/i,
      /redis up/i,
      /firing alerts/i,
    ]) {
      expect(
        titles.filter((t) => wanted.test(t)),
        String(wanted),
      ).toHaveLength(1);
    }
    const stat = (re: RegExp) => stats.find((p) => re.test(p.title)) as Panel;
    const steps = (p: Panel) =>
      (p.fieldConfig?.defaults.thresholds?.steps ?? []).map((s) => s.value).filter((v): v is number => v !== null);
    const alert = (n: string) => alertRules().find((r) => r.alert === n);
    const number = (expr: string, re: RegExp) => Number(re.exec(expr.replace(/\s+/g, ' '))?.[1]);
    // Oldest ready job: red from the alert's threshold.
    expect(steps(stat(/oldest ready job/i))).toEqual([number(alert('ActionRelayOldestWaitingJobTooOld')?.expr ?? '', /> (\d+)/)]);
    // Burn: orange at the 6x page, red at the 14.4x page.
    const burn = alert('ActionRelayDeliveryErrorBudgetBurn')?.expr ?? '';
    expect(steps(stat(/burn/i))).toEqual([number(burn, /burn_rate6h > ([\d.]+)/), number(burn, /burn_rate1h > ([\d.]+)/)]);
    // Success: the same page thresholds, and the objective, as shares of jobs delivered.
    const objective = number(
      recordingRules().find((r) => r.record === 'action_relay:slo_delivery_success:objective')?.expr ?? '',
      /vector\(([\d.]+)\)/,
    );
    const budget = 1 - objective;
    const success = steps(stat(/success/i));
    expect(success).toHaveLength(3);
    [1 - 14.4 * budget, 1 - 6 * budget, objective].forEach((v, i) => expect(success[i]).toBeCloseTo(v, 9));
    // Workers and Redis: red at 0, as their alerts.
    expect(alert('ActionRelayNoWorkerAlive')?.expr).toContain('== 0');
    expect(steps(stat(/workers up/i))).toEqual([1]);
    expect(alert('ActionRelayRedisDown')?.expr).toContain('== 0');
    expect(steps(stat(/redis up/i))).toEqual([1]);
    expect(steps(stat(/dead letters/i))).toContain(number(alert('ActionRelayDlqGrowing')?.expr ?? '', />= (\d+)/));
    for (const p of stats) {
      if (/deliveries per second|firing/i.test(p.title)) continue;
      expect(p.links?.[0]?.url, p.title).toMatch(/^\$\{runbooks\}#actionrelay[a-z]+$/);
    }
  });

  it('gives every panel a unit that fits what it counts (jobs are not requests) and links to the runbooks, queue board and console', () => {
    for (const p of panels) {
      const unit = p.fieldConfig?.defaults.unit;
      expect(unit, p.title).toBeTruthy();
      const exprs = (p.targets ?? []).map((t) => t.expr).join(' ');
      if (/action_relay_(jobs|enqueue|rate_limited)_total/.test(exprs) && /rate\(/.test(exprs)) expect(unit, p.title).not.toBe('reqps');
      // One quantity per panel: no rate next to seconds.
      const rates = (p.targets ?? []).filter((t) => /^sum by \([^)]*\) \(rate\(/.test(t.expr)).length;
      const quantiles = (p.targets ?? []).filter((t) => t.expr.startsWith('histogram_quantile')).length;
      expect(rates > 0 && quantiles > 0, p.title).toBe(false);
    }
    const links = (dashboard as unknown as { links: { url: string }[] }).links.map((l) => l.url);
    expect(links).toEqual(['${runbooks}', '${api_url}/admin/queues', '${api_url}/console']);
  });

  it('counts queue gauges once: every process reports them, so panels take max, never sum', () => {
    for (const p of panels) {
      for (const t of p.targets ?? []) {
        if (/action_relay_(queue_jobs|oldest_waiting_seconds)/.test(t.expr)) expect(t.expr, p.title).toMatch(/^max\b/);
      }
    }
    for (const r of alertRules()) {
      if (/action_relay_(queue_jobs|oldest_waiting_seconds)/.test(r.expr)) expect(r.expr, r.alert).toMatch(/^max\b/);
    }
  });
});

describe('alert rules', () => {
  const rules = alertRules();

  it('has the alerts of the issue, each with severity and service labels, a summary, a description, a runbook and a valid for', () => {
    expect(rules.map((r) => r.alert).sort()).toEqual([
      'ActionRelayActionErrorRatioHigh',
      'ActionRelayCapping',
      'ActionRelayCircuitOpen',
      'ActionRelayDeliveryErrorBudgetBurn',
      'ActionRelayDeliveryErrorBudgetSlowBurn',
      'ActionRelayDeliveryLatencyBudgetBurn',
      'ActionRelayDeliveryLatencyBudgetSlowBurn',
      'ActionRelayDlqGrowing',
      'ActionRelayNoWorkerAlive',
      'ActionRelayOldestWaitingJobTooOld',
      'ActionRelayRedisDown',
      'ActionRelayResultsConsumerLagging',
    ]);
    for (const r of rules) {
      expect(['warning', 'critical'], r.alert).toContain(r.labels?.severity);
      expect(r.labels?.service, r.alert).toBe('action-relay');
      expect(r.annotations?.summary, r.alert).toBeTruthy();
      expect(r.annotations?.description, r.alert).toBeTruthy();
      expect(r.annotations?.runbook_url, r.alert).toBe(`docs/runbooks.md#${r.alert.toLowerCase()}`);
      if (r.for !== undefined) expect(r.for, r.alert).toMatch(/^\d+[smh]$/);
    }
    for (const r of recordingRules()) expect(r.labels?.service ?? '', r.record).toMatch(/^(action-relay)?$/);
    const byName = (n: string) => rules.find((r) => r.alert === n)?.expr ?? '';
    expect(byName('ActionRelayActionErrorRatioHigh')).toMatch(/> 0\.2\b/);
    expect(byName('ActionRelayActionErrorRatioHigh')).toContain('status_class=~"5xx|timeout|network"');
    expect(byName('ActionRelayCapping')).toContain('reason="capped"');
    expect(byName('ActionRelayNoWorkerAlive')).toContain('up{job="action-relay-worker"}');
    expect(byName('ActionRelayRedisDown')).toContain('action_relay_redis_up == 0');
    // Bursts are counted on counters by action and reason, never on the DLQ size.
    for (const n of ['ActionRelayDlqGrowing', 'ActionRelayCapping']) {
      expect(byName(n)).toContain('action_relay_dead_letters_total');
      expect(byName(n)).not.toContain('action_relay_queue_jobs');
    }
    // Rule unit tests exist for promtool (run by .ci/run).
    const tests = readYaml<{ tests: { alert_rule_test: { alertname: string }[] }[] }>('grafana/prometheus/alerts.test.yml');
    const tested = new Set(tests.tests.flatMap((t) => t.alert_rule_test.map((a) => a.alertname)));
    expect([...tested].sort()).toEqual(rules.map((r) => r.alert).sort());
  });

  it('burns the SLO budgets on the workbook windows: page 14.4x over 1h and 5m or 6x over 6h and 30m, ticket 1x over 3d and 6h', () => {
    const records = recordingRules().map((r) => r.record);
    for (const slo of ['delivery_errors', 'delivery_slow']) {
      for (const w of ['5m', '30m', '1h', '6h', '3d']) {
        expect(records).toContain(`action_relay:${slo}:ratio_rate${w}`);
        expect(records).toContain(`action_relay:${slo}:burn_rate${w}`);
      }
    }
    const ratio = recordingRules().find((r) => r.record === 'action_relay:delivery_errors:ratio_rate1h')?.expr ?? '';
    expect(ratio).toContain('reason!~"invalid_params|unknown_action|blocked_destination"');
    const slow = recordingRules().find((r) => r.record === 'action_relay:delivery_slow:ratio_rate1h')?.expr ?? '';
    expect(slow).toContain('action_relay_delivery_latency_seconds_bucket{le="300"}');
    const compact = (n: string) => (rules.find((r) => r.alert === n)?.expr ?? '').replace(/\s+/g, ' ');
    for (const slo of ['Error', 'Latency']) {
      const metric = slo === 'Error' ? 'delivery_errors' : 'delivery_slow';
      const page = compact(`ActionRelayDelivery${slo}BudgetBurn`);
      expect(page).toContain(`action_relay:${metric}:burn_rate1h > 14.4 and action_relay:${metric}:burn_rate5m > 14.4`);
      expect(page).toContain(`action_relay:${metric}:burn_rate6h > 6 and action_relay:${metric}:burn_rate30m > 6`);
      expect(rules.find((r) => r.alert === `ActionRelayDelivery${slo}BudgetBurn`)?.labels?.severity).toBe('critical');
      const ticket = compact(`ActionRelayDelivery${slo}BudgetSlowBurn`);
      expect(ticket).toContain(`action_relay:${metric}:burn_rate3d > 1 and action_relay:${metric}:burn_rate6h > 1`);
      expect(rules.find((r) => r.alert === `ActionRelayDelivery${slo}BudgetSlowBurn`)?.labels?.severity).toBe('warning');
    }
  });

  it('has a runbook section per alert in docs/runbooks.md and a row per alert in docs/slo.md', () => {
    const runbooks = readText('docs/runbooks.md');
    const headings = new Set([...runbooks.matchAll(/^## (\S+)\s*$/gm)].map((m) => m[1] as string));
    const slo = readText('docs/slo.md');
    for (const r of rules) {
      expect(headings.has(r.alert), `## ${r.alert} in docs/runbooks.md`).toBe(true);
      const section = runbooks.split(/^## /m).find((s) => s.startsWith(`${r.alert}\n`)) ?? '';
      for (const part of ['Meaning', 'Verify', 'Mitigate', 'Escalate']) expect(section, `${r.alert}: ${part}`).toContain(`**${part}**`);
      expect(section, `${r.alert}: a CLI command`).toMatch(/action-relay (stats|dlq|actions)|curl|redis-cli/);
      expect(slo, `${r.alert} in the alert table of docs/slo.md`).toMatch(new RegExp(`^\\| \\[?\`?${r.alert}\\b`, 'm'));
    }
  });

  it('uses only the job names that prometheus.yml defines', () => {
    const jobs = readYaml<{ scrape_configs: { job_name: string }[] }>(PROMETHEUS_FILE).scrape_configs.map((j) => j.job_name);
    const texts = [...rules.map((r) => r.expr), ...dashboardPanels().flatMap((p) => (p.targets ?? []).map((t) => t.expr))];
    for (const text of texts) {
      for (const m of text.matchAll(/job=~?"([^"]+)"/g)) {
        expect(
          jobs.some((j) => new RegExp(`^(?:${m[1]})$`).test(j)),
          `${m[1]} in ${text}`,
        ).toBe(true);
      }
    }
  });
});

describe('metricNames (reads the metric names of a PromQL expression)', () => {
  it('skips functions, aggregations, keywords, label names, matchers, ranges and durations', () => {
    expect(
      metricNames(
        'histogram_quantile(0.95, sum by (action, le) (rate(action_relay_http_request_duration_seconds_bucket{action=~"$action"}[$__rate_interval])))',
      ),
    ).toEqual(['action_relay_http_request_duration_seconds_bucket']);
    expect(
      metricNames(
        '(sum by (action) (rate(a_total{status_class!="2xx"}[5m])) / sum by (action) (rate(a_total[5m]))) > 0.2 and on (action) sum(b offset 10m) >= 10',
      ),
    ).toEqual(['a_total', 'b']);
    expect(metricNames('sum(up{job="w"}) == 0 or absent(up{job="w"})')).toEqual(['up']);
    expect(metricNames('max(delta(q{state="dlq"}[15m])) > 0')).toEqual(['q']);
  });
});
