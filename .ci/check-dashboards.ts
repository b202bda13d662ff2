/**
 * Holds the Grafana dashboard true against a real Prometheus: runs `action-relay demo` on free
 * loopback ports with a private key prefix, adds actions that fail, retry, die, get deferred,
 * get capped, open a circuit and fetch tokens, starts Debian's Prometheus (/usr/bin/prometheus)
 * on loopback scraping the demo's API and worker and loading the alert rules, waits for two
 * scrapes, then runs every panel query of grafana/dashboards/action-relay.json through
 * /api/v1/query. Fails on a query error, or on a panel with no data where the traffic must
 * produce some; prints one line per query (panel, query, result).
 *
 *   npm run check:dashboards           (builds first)
 *   npx tsx .ci/check-dashboards.ts    (uses dist/ as built)
 *   npx tsx .ci/check-dashboards.ts --health-html health-row.html
 *                                      (also renders the health row's stat panels, with their
 *                                       values and threshold colours, into a small HTML page:
 *                                       Grafana itself cannot run here)
 *
 * Needs `prometheus` (apt-get install prometheus) and the build in dist/.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { freePort, redisAnswers } from '../src/redis/embedded-redis.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DASHBOARD = join(ROOT, 'grafana/dashboards/action-relay.json');
const ALERTS = join(ROOT, 'grafana/prometheus/alerts.yml');
const CLI = join(ROOT, 'dist/workers/action-relay.js');
/** Prometheus scrapes every second here; Grafana's $__rate_interval would then be about 4 scrapes. */
const SCRAPE_INTERVAL = '1s';
const RATE_INTERVAL = '10s';
/** How long a panel may take to show data once Prometheus has scraped twice. */
const DATA_DEADLINE_MS = 45_000;

/**
 * Panels that may legitimately show nothing, with the reason. Empty: the traffic below makes
 * every panel's events happen (even a circuit opening, capping and token fetches).
 */
const MAY_BE_EMPTY = new Map<string, string>();

interface Target {
  panel: string;
  refId: string;
  expr: string;
}

interface DashboardPanel {
  title: string;
  type: string;
  description?: string;
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: { refId: string; expr: string }[];
  panels?: DashboardPanel[];
  fieldConfig?: {
    defaults: {
      unit?: string;
      decimals?: number;
      thresholds?: { steps: { color: string; value: number | null }[] };
      mappings?: { options: Record<string, { text: string }> }[];
    };
  };
}

interface DashboardJson {
  panels: DashboardPanel[];
  templating: { list: { name: string; query: unknown }[] };
}

const started = Date.now();
const children: ChildProcess[] = [];
let tmp = '';

function log(line: string): void {
  process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s] ${line}\n`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function until<T>(what: string, timeoutMs: number, fn: () => Promise<T | undefined | false>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

function targets(): Target[] {
  const dash = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as DashboardJson;
  const panels = dash.panels.flatMap((p) => (p.type === 'row' ? (p.panels ?? []) : [p]));
  return panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, refId: t.refId, expr: t.expr })));
}

/** What Grafana would send: every action, and a rate window fit for the scrape interval. */
function interpolate(expr: string): string {
  return expr.replaceAll('$__rate_interval', RATE_INTERVAL).replaceAll('$action', '.*');
}

/** `--health-html <file>`: where to render the health row, if asked. */
function healthHtmlPath(): string | undefined {
  const i = process.argv.indexOf('--health-html');
  return i > 0 ? process.argv[i + 1] : undefined;
}

const COLORS: Record<string, string> = { green: '#299c46', yellow: '#e0b400', orange: '#ff780a', red: '#d44a3a', blue: '#1f60c4' };

/** A stat value as Grafana would print it with the panel's unit, decimals and value mappings. */
function formatStat(panel: DashboardPanel, value: number): string {
  const d = panel.fieldConfig?.defaults ?? {};
  const mapped = d.mappings?.flatMap((m) => Object.entries(m.options)).find(([k]) => Number(k) === value)?.[1].text;
  if (mapped) return mapped;
  const fixed = (v: number) => v.toFixed(d.decimals ?? (Math.abs(v) >= 100 ? 0 : 2));
  const unit = d.unit ?? 'none';
  if (unit === 'percentunit') return `${fixed(value * 100)}%`;
  if (unit === 's') return value >= 60 ? `${Math.floor(value / 60)} min ${Math.round(value % 60)} s` : `${Number(value.toFixed(1))} s`;
  if (unit === 'x') return `${fixed(value)}x`;
  if (unit.startsWith('suffix:')) return `${fixed(value)} ${unit.slice('suffix:'.length).trim()}`;
  return fixed(value);
}

/** The colour of the last threshold step at or below the value, as Grafana picks it. */
function colorOf(panel: DashboardPanel, value: number): string {
  let color = 'green';
  for (const step of panel.fieldConfig?.defaults.thresholds?.steps ?? [])
    if (step.value === null || value >= step.value) color = step.color;
  return COLORS[color] ?? color;
}

/** The health row (the stat panels) rendered from the values Prometheus answered, in one HTML page. */
function renderHealthRow(values: Map<string, number | undefined>, at: Date): string {
  const dash = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as DashboardJson;
  const stats = dash.panels.filter((p) => p.type === 'stat').sort((a, b) => a.gridPos.x - b.gridPos.x);
  const esc = (t: string) => t.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
  const cells = stats.map((p) => {
    const v = values.get(p.title);
    const text = v === undefined ? 'No data' : formatStat(p, v);
    const bg = v === undefined ? '#3d3d3d' : colorOf(p, v);
    const expr = p.targets?.[0]?.expr ?? '';
    return `<div class="stat" style="background:${bg}" title="${esc(p.description ?? '')}"><div class="t">${esc(p.title)}</div><div class="v">${esc(text)}</div><code>${esc(expr)}</code></div>`;
  });
  return [
    '<!doctype html><meta charset="utf-8"><title>action-relay health row</title>',
    '<style>body{background:#111217;color:#ccccdc;font:14px sans-serif;margin:16px}.row{display:grid;grid-template-columns:repeat(8,1fr);gap:8px}',
    '.stat{border-radius:4px;padding:8px;color:#fff;min-height:110px}.t{font-size:13px}.v{font-size:28px;font-weight:600;margin:10px 0}code{font-size:9px;opacity:.75;word-break:break-all}</style>',
    `<h3>action-relay: Health row (rendered from the demo by .ci/check-dashboards.ts at ${at.toISOString()}; Grafana itself does not run here)</h3>`,
    `<div class="row">${cells.join('')}</div>`,
    "<p>Each box: the panel title, its value from Prometheus with the panel's unit, coloured by the panel's thresholds (the alert thresholds), and its query.</p>",
  ].join('\n');
}

async function putAction(api: string, def: Record<string, unknown>): Promise<void> {
  const res = await fetch(`${api}/v1/actions/${String(def.id)}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(def),
  });
  if (res.status !== 200 && res.status !== 201) throw new Error(`PUT action ${String(def.id)}: ${res.status} ${await res.text()}`);
}

/** A token endpoint for the oauth2 action: short-lived tokens, so that refreshes keep coming. */
async function startTokenServer(port: number): Promise<() => Promise<void>> {
  const server = createServer((_req, res) => {
    res
      .writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ access_token: randomUUID(), token_type: 'Bearer', expires_in: 2 }));
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve()));
  return () => new Promise((resolve) => server.close(() => resolve()));
}

interface QueryAnswer {
  status: string;
  error?: string;
  data?: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] };
}

async function query(prom: string, expr: string): Promise<QueryAnswer> {
  const res = await fetch(`${prom}/api/v1/query?query=${encodeURIComponent(expr)}`);
  return (await res.json()) as QueryAnswer;
}

function finite(a: QueryAnswer): { metric: Record<string, string>; value: number }[] {
  return (a.data?.result ?? []).map((r) => ({ metric: r.metric, value: Number(r.value[1]) })).filter((r) => Number.isFinite(r.value));
}

function describeResult(rows: { metric: Record<string, string>; value: number }[]): string {
  if (rows.length === 0) return 'no data';
  const first = rows[0] as (typeof rows)[0];
  const labels = Object.entries(first.metric)
    .map(([k, v]) => `${k}="${v}"`)
    .join(',');
  return `${rows.length} series, e.g. {${labels}} ${Number(first.value.toPrecision(4))}`;
}

async function stop(child: ChildProcess, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill(signal);
  if (await Promise.race([exited.then(() => true), sleep(graceMs).then(() => false)])) return;
  child.kill('SIGKILL');
  await exited;
}

async function removePrefixKeys(redisUrl: string, prefix: string): Promise<void> {
  const r = new Redis(redisUrl);
  let cursor = '0';
  do {
    const [next, keys] = await r.scan(cursor, 'MATCH', `{${prefix}[:}]*`, 'COUNT', 1000);
    cursor = next;
    for (const k of keys) await r.unlink(k);
  } while (cursor !== '0');
  await r.quit();
}

async function main(): Promise<number> {
  const prometheusBin = ['/usr/bin/prometheus', spawnSync('which', ['prometheus'], { encoding: 'utf8' }).stdout.trim()].find(
    (p) => p && existsSync(p),
  );
  if (!prometheusBin) throw new Error('prometheus is not installed (Debian: apt-get install prometheus)');
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build`);

  tmp = mkdtempSync(join(tmpdir(), 'check-dashboards-'));
  const [apiPort, metricsPort, receiverPort, promPort, tokenPort, closedPort] = await Promise.all(
    Array.from({ length: 6 }, () => freePort()),
  );
  const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  const sharedRedis = await redisAnswers(redisUrl);
  const prefix = `check-dashboards-${randomUUID().slice(0, 8)}`;
  const api = `http://127.0.0.1:${apiPort}`;
  const prom = `http://127.0.0.1:${promPort}`;

  // 1. The demo: api + worker + mock receiver + sample traffic, on this run's ports and prefix.
  const demoLog = join(tmp, 'demo.log');
  const demoOut = createWriteStream(demoLog);
  const demo = spawn(process.execPath, [CLI, 'demo', '--rate', '50', '--duration', '600', '--receiver-port', String(receiverPort)], {
    cwd: ROOT,
    env: {
      ...process.env,
      REDIS_URL: redisUrl,
      ACTION_RELAY_PREFIX: prefix,
      HOST: '127.0.0.1',
      PORT: String(apiPort),
      METRICS_PORT: String(metricsPort),
      ACTION_SECRET_CHECK_CLIENT: 'check-dashboards-secret',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(demo);
  demo.stdout?.pipe(demoOut);
  demo.stderr?.pipe(demoOut);
  const stopTokens = await startTokenServer(tokenPort as number);
  try {
    log(`demo starting (prefix ${prefix}, api :${apiPort}, worker metrics :${metricsPort}, receiver :${receiverPort}; log ${demoLog})`);
    await until('the demo API', 60_000, async () => demo.exitCode === null && (await fetch(`${api}/readyz`)).ok);
    await until('the demo worker', 30_000, async () => (await fetch(`http://127.0.0.1:${metricsPort}/healthz`)).ok);

    // A consumer group on the results stream, as the journey engine has: its lag is on the dashboard.
    // From the start ('0'), not from '$': created at '$' on an empty stream, Redis 7.0 may report
    // the group's lag as unknown (nil) until it reads, which left the lag panel without data.
    const groupClient = new Redis(redisUrl);
    await groupClient.xgroup('CREATE', `{${prefix}}:results`, 'check-dashboards', '0', 'MKSTREAM').catch((err: unknown) => {
      if (!String(err).includes('BUSYGROUP')) throw err;
    });
    await groupClient.quit();

    // 2. Actions whose events the sample traffic does not make: dead letters (a closed port),
    //    a circuit that opens, rate-limit deferrals and capping, and access-token fetches.
    const receiver = `http://127.0.0.1:${receiverPort}`;
    const closed = `http://127.0.0.1:${closedPort}`;
    const fixed = { type: 'fixed', delayMs: 100, maxDelayMs: 100 };
    const common = { parameters: { n: { type: 'integer' } }, body: { n: '{{params.n}}' } };
    await putAction(api, {
      ...common,
      id: 'check_dead',
      name: 'nothing listens: network errors, one retry, then dead',
      endpoint: { url: closed, path: '/dead', method: 'POST' },
      retry: { maxAttempts: 2, backoff: fixed },
    });
    await putAction(api, {
      ...common,
      id: 'check_breaker',
      name: 'nothing listens: the circuit opens',
      endpoint: { url: closed, path: '/breaker', method: 'POST' },
      retry: { maxAttempts: 1 },
      rateLimit: { key: 'check-breaker', max: 1000, perMs: 1000 },
      circuitBreaker: { failureRatio: 0.5, minRequests: 3, windowMs: 10_000, openMs: 3000 },
    });
    await putAction(api, {
      ...common,
      id: 'check_capped',
      name: 'one request per 2 s, at most 3 s of waiting: deferrals and capping',
      endpoint: { url: receiver, path: '/capped', method: 'POST' },
      rateLimit: { key: 'check-capped', max: 1, perMs: 2000, maxWaitMs: 3000 },
    });
    await putAction(api, {
      ...common,
      id: 'check_token',
      name: 'oauth2 client credentials, 2 s tokens',
      endpoint: { url: receiver, path: '/protected', method: 'POST' },
      auth: {
        type: 'oauth2ClientCredentials',
        tokenUrl: `http://127.0.0.1:${tokenPort}/token`,
        clientId: 'check',
        clientSecret: { env: 'ACTION_SECRET_CHECK_CLIENT' },
      },
    });
    let n = 0;
    const trouble = setInterval(() => {
      const jobs = ['check_dead', 'check_breaker', 'check_capped', 'check_token'].map((actionId) => ({ actionId, params: { n: n++ } }));
      fetch(`${api}/v1/jobs/batch`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ jobs }) })
        .then((r) => (r.status === 202 ? undefined : log(`enqueue answered ${r.status}`)))
        .catch((err: unknown) => log(`enqueue failed: ${(err as Error).message}`));
    }, 500);

    try {
      // 3. Prometheus on loopback: the demo's two /metrics, the alert rules, one scrape a second.
      const config = [
        'global:',
        `  scrape_interval: ${SCRAPE_INTERVAL}`,
        `  evaluation_interval: ${SCRAPE_INTERVAL}`,
        'rule_files:',
        `  - ${JSON.stringify(ALERTS)}`,
        'scrape_configs:',
        '  - job_name: action-relay-api',
        '    static_configs:',
        `      - targets: ['127.0.0.1:${apiPort}']`,
        '  - job_name: action-relay-worker',
        '    static_configs:',
        `      - targets: ['127.0.0.1:${metricsPort}']`,
        '',
      ].join('\n');
      writeFileSync(join(tmp, 'prometheus.yml'), config);
      const promOut = createWriteStream(join(tmp, 'prometheus.log'));
      const prometheus = spawn(
        prometheusBin,
        [
          `--config.file=${join(tmp, 'prometheus.yml')}`,
          `--storage.tsdb.path=${join(tmp, 'data')}`,
          `--web.listen-address=127.0.0.1:${promPort}`,
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      children.push(prometheus);
      prometheus.stdout?.pipe(promOut);
      prometheus.stderr?.pipe(promOut);
      log(`prometheus starting on :${promPort} (log ${join(tmp, 'prometheus.log')})`);
      await until('prometheus ready', 30_000, async () => prometheus.exitCode === null && (await fetch(`${prom}/-/ready`)).ok);
      for (const job of ['action-relay-api', 'action-relay-worker']) {
        await until(`two scrapes of ${job}`, 30_000, async () => {
          const a = await query(prom, `sum_over_time(up{job="${job}"}[1m])`);
          return (finite(a)[0]?.value ?? 0) >= 2;
        });
      }
      log('two scrapes of the api and the worker done; running the panel queries');

      // 4. Every panel query, until it has data (a rate needs two samples of a moving counter).
      const all = targets();
      const answers = new Map<Target, { error?: string; rows: ReturnType<typeof finite> }>();
      const deadline = Date.now() + DATA_DEADLINE_MS;
      for (;;) {
        for (const t of all) {
          if (answers.get(t)?.rows.length) continue;
          const a = await query(prom, interpolate(t.expr));
          answers.set(t, a.status === 'success' ? { rows: finite(a) } : { error: a.error ?? a.status, rows: [] });
        }
        const waiting = all.filter((t) => !answers.get(t)?.error && !answers.get(t)?.rows.length && !MAY_BE_EMPTY.has(t.panel));
        if (waiting.length === 0 || Date.now() > deadline) break;
        await sleep(1000);
      }
      const variable = await fetch(`${prom}/api/v1/label/action/values?match[]=action_relay_jobs_total`).then(
        (r) => r.json() as Promise<{ data: string[] }>,
      );

      // 5. The alert rules as Prometheus loaded them: none may fail to evaluate; capping must fire.
      // Capping has `for: 1m`: pending is enough to show that it sees the capped jobs.
      const capSeen = (state: string | undefined) => state === 'firing' || state === 'pending';
      const rules = await until('every rule evaluated, capping pending or firing', 30_000, async () => {
        const body = (await (await fetch(`${prom}/api/v1/rules`)).json()) as {
          data: {
            groups: {
              rules: { name: string; type: string; health: string; lastError?: string; state: string; lastEvaluation: string }[];
            }[];
          };
        };
        const list = body.data.groups.flatMap((g) => g.rules);
        const evaluated = list.length > 0 && list.every((r) => !r.lastEvaluation.startsWith('0001'));
        return evaluated && list.some((r) => r.name === 'ActionRelayCapping' && capSeen(r.state)) && list;
      }).catch(async (err: unknown) => {
        log((err as Error).message);
        const body = (await (await fetch(`${prom}/api/v1/rules`)).json()) as {
          data: { groups: { rules: { name: string; type: string; health: string; lastError?: string; state?: string }[] }[] };
        };
        return body.data.groups.flatMap((g) => g.rules);
      });

      // 6. The table.
      let failures = 0;
      const out: string[] = ['| panel | ref | query | result | check |', '| --- | --- | --- | --- | --- |'];
      for (const t of all) {
        const a = answers.get(t);
        let verdict = 'ok';
        if (a?.error) verdict = `FAIL: query error ${a.error}`;
        else if (!a?.rows.length) verdict = MAY_BE_EMPTY.has(t.panel) ? `empty allowed: ${MAY_BE_EMPTY.get(t.panel)}` : 'FAIL: no data';
        if (verdict.startsWith('FAIL')) failures++;
        out.push(
          `| ${t.panel} | ${t.refId} | \`${t.expr.replaceAll('|', '\\|')}\` | ${a?.error ? '-' : describeResult(a?.rows ?? [])} | ${verdict} |`,
        );
      }
      const actions = variable.data ?? [];
      if (actions.length === 0) failures++;
      out.push(
        `| variable action | - | \`label_values(action_relay_jobs_total, action)\` | ${actions.join(', ') || 'no values'} | ${actions.length ? 'ok' : 'FAIL: no values'} |`,
      );
      for (const r of rules) {
        const bad = r.health === 'err';
        const capping = r.name === 'ActionRelayCapping' && !capSeen(r.state);
        if (bad || capping) failures++;
        out.push(
          `| ${r.type === 'recording' ? 'record' : 'alert'} ${r.name} | - | (alerts.yml) | ${r.state ? `state ${r.state}, ` : ''}health ${r.health}${r.lastError ? ` (${r.lastError})` : ''} | ${bad ? 'FAIL: evaluation error' : capping ? 'FAIL: capping happens but the alert is not firing' : 'ok'} |`,
        );
      }
      process.stdout.write(`${out.join('\n')}\n`);
      const htmlPath = healthHtmlPath();
      if (htmlPath) {
        const values = new Map<string, number | undefined>();
        for (const t of all) values.set(t.panel, answers.get(t)?.rows[0]?.value);
        writeFileSync(htmlPath, renderHealthRow(values, new Date()));
        log(`health row rendered to ${htmlPath}`);
      }
      const panels = new Set(all.map((t) => t.panel)).size;
      log(`${all.length} queries of ${panels} panels, ${rules.length} rules: ${failures === 0 ? 'all good' : `${failures} failed`}`);
      await stop(prometheus, 'SIGTERM', 5000);
      return failures === 0 ? 0 : 1;
    } finally {
      clearInterval(trouble);
    }
  } finally {
    await stopTokens();
    await stop(demo, 'SIGINT', 15_000);
    if (sharedRedis) await removePrefixKeys(redisUrl, prefix);
  }
}

main()
  .then((code) => {
    if (code === 0 && tmp) rmSync(tmp, { recursive: true, force: true });
    else if (tmp) log(`logs kept in ${tmp}`);
    log(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    process.exit(code);
  })
  .catch(async (err: unknown) => {
    log(`check-dashboards failed: ${(err as Error).stack ?? String(err)}`);
    for (const c of children) await stop(c, 'SIGKILL', 1000);
    if (tmp) log(`logs kept in ${tmp}`);
    process.exit(1);
  });
