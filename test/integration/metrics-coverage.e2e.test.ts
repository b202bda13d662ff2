import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiServer } from '../../src/api/api-server.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import { freePort } from '../../src/redis/embedded-redis.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import type { Config } from '../../src/config/config.js';
import { WORKER_START_MS, kill, readResults, setupRun, spawnWorker, waitFor, type Receiver } from '../support/harness.js';
import { PROMETHEUS_SYNTHETIC, alertRules, dashboardPanels, exportedMetricNames, readYaml } from '../support/ops-files.js';

// A real worker process and an API run a few deliveries that succeed, retry, die, get
// rate-limited, get capped, open a circuit and fetch a token; then every metric that the
// dashboard and the alert rules read must be on the /metrics of one of them.

const children: ChildProcess[] = [];
const cleanups: (() => Promise<void>)[] = [];
let receiver: Receiver;
let ctx: RelayContext;
let api: FastifyInstance;
let apiUrl: string;
let workerUrl: string;

const CLIENT_SECRET = 'metrics-coverage-client-secret';
const DELAY_MS = 3000;

beforeAll(async () => {
  let config: Config;
  ({ receiver, config, ctx } = await setupRun(cleanups));
  const attempts = new Map<string, number>();
  receiver.handler = (req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (path === '/token') {
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ access_token: 'tok-1', token_type: 'Bearer', expires_in: 3600 }));
      return;
    }
    if (path === '/flaky') {
      // The first attempt of each job fails, the second succeeds.
      const key = String(req.headers['idempotency-key']);
      const n = (attempts.get(key) ?? 0) + 1;
      attempts.set(key, n);
      res.writeHead(n === 1 ? 503 : 200, { 'content-type': 'application/json' }).end('{}');
      return;
    }
    if (path === '/down') {
      res.writeHead(500).end('down');
      return;
    }
    if (path === '/protected' && req.headers.authorization !== 'Bearer tok-1') {
      res.writeHead(401).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  };

  const base = { endpoint: { url: receiver.url, method: 'POST' }, body: { n: 1 } };
  const fixed = { type: 'fixed', delayMs: 50, maxDelayMs: 50 };
  await ctx.store.put({ ...base, id: 'ok', name: 'ok', endpoint: { ...base.endpoint, path: '/ok' } });
  await ctx.store.put({ ...base, id: 'later', name: 'later', endpoint: { ...base.endpoint, path: '/ok' } });
  await ctx.store.put({
    ...base,
    id: 'flaky',
    name: 'flaky',
    endpoint: { ...base.endpoint, path: '/flaky' },
    retry: { maxAttempts: 3, backoff: fixed },
  });
  // Two failures open the circuit of its own key; later jobs are deferred.
  await ctx.store.put({
    ...base,
    id: 'down',
    name: 'down',
    endpoint: { ...base.endpoint, path: '/down' },
    retry: { maxAttempts: 1 },
    rateLimit: { key: 'down-key', max: 1000, perMs: 1000 },
    circuitBreaker: { failureRatio: 0.5, minRequests: 2, windowMs: 60_000, openMs: 60_000 },
  });
  // One request per 3 s, at most 4 s of waiting: the first goes, the second is deferred, the third capped.
  await ctx.store.put({
    ...base,
    id: 'limited',
    name: 'limited',
    endpoint: { ...base.endpoint, path: '/limited' },
    rateLimit: { key: 'slow-key', max: 1, perMs: 3000, maxWaitMs: 4000 },
  });
  await ctx.store.put({
    ...base,
    id: 'oauth',
    name: 'oauth',
    endpoint: { ...base.endpoint, path: '/protected' },
    auth: {
      type: 'oauth2ClientCredentials',
      tokenUrl: `${receiver.url}/token`,
      clientId: 'relay',
      clientSecret: { env: 'ACTION_SECRET_T_CLIENT_SECRET' },
    },
  });

  api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
  cleanups.push(() => api.close());
  apiUrl = await api.listen({ port: 0, host: '127.0.0.1' });
  const metricsPort = await freePort();
  workerUrl = `http://127.0.0.1:${metricsPort}`;
  // One job at a time, so that the circuit opens after exactly two requests.
  spawnWorker(config, children, {
    METRICS_PORT: String(metricsPort),
    ACTION_SECRET_T_CLIENT_SECRET: CLIENT_SECRET,
    WORKER_CONCURRENCY: '1',
  });
  await waitFor(
    () =>
      fetch(`${workerUrl}/healthz`)
        .then((r) => r.ok)
        .catch(() => false),
    WORKER_START_MS,
    'worker /healthz',
  );

  // The journey engine's consumer group on the results stream: its lag is exported.
  await ctx.redis.xgroup('CREATE', ctx.keys.results, 'journeys', '$', 'MKSTREAM');
  const jobs = [
    ...['ok', 'flaky', 'oauth'].map((actionId) => ({ actionId, params: {} })),
    // Ready 3 s after enqueue: its latency counts from then, not from the enqueue.
    { actionId: 'later', params: {}, delayMs: DELAY_MS },
    ...Array.from({ length: 3 }, () => ({ actionId: 'down', params: {} })),
    ...Array.from({ length: 3 }, () => ({ actionId: 'limited', params: {} })),
  ];
  const enqueued = await ctx.producer.enqueueMany(jobs);
  expect(enqueued.every((j) => 'jobId' in j)).toBe(true);
}, 120_000);

afterAll(async () => {
  await Promise.all(children.splice(0).map((c) => kill(c, 'SIGTERM')));
  for (const c of cleanups.reverse()) await c();
});

async function scrape(url: string): Promise<string> {
  const res = await fetch(`${url}/metrics`);
  expect(res.status).toBe(200);
  return res.text();
}

/** The sample names of a Prometheus text exposition, and the TYPE of each metric family. */
function exposition(text: string): { samples: Set<string>; types: Map<string, string> } {
  const samples = new Set<string>();
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)/.exec(line);
    if (type) types.set(type[1] as string, type[2] as string);
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]/.exec(line);
    if (sample) samples.add(sample[1] as string);
  }
  return { samples, types };
}

/** Every metric the dashboard and the rules read, with where it is read. */
function wantedMetrics(): Map<string, string[]> {
  const wanted = new Map<string, string[]>();
  const add = (name: string, where: string) => wanted.set(name, [...(wanted.get(name) ?? []), where]);
  for (const p of dashboardPanels())
    for (const t of p.targets ?? []) for (const n of exportedMetricNames(t.expr)) add(n, `panel "${p.title}"`);
  for (const r of alertRules()) for (const n of exportedMetricNames(r.expr)) add(n, `alert ${r.alert}`);
  return wanted;
}

describe('metrics named by the dashboard and the alert rules', () => {
  it('are all exported by a running worker or api after deliveries, retries, dead letters, deferrals, capping, a circuit opening and a token fetch', async () => {
    const wanted = [...wantedMetrics().keys()].filter((n) => !PROMETHEUS_SYNTHETIC.has(n));
    expect(wanted.length).toBeGreaterThan(10);
    const missing = async () => {
      const [w, a] = await Promise.all([scrape(workerUrl), scrape(apiUrl)]);
      const all = new Set([...exposition(w).samples, ...exposition(a).samples]);
      return wanted.filter((n) => !all.has(n));
    };
    await waitFor(async () => (await missing()).length === 0, 20_000, 'every metric').catch(() => undefined);
    expect(await missing()).toEqual([]);

    // Every job ends but the third of `down`, deferred while its circuit is open; the deferred `limited` one after its slot.
    const results = await waitFor(
      async () => {
        const r = await readResults(ctx);
        return r.length >= 9 && r;
      },
      15_000,
      'nine outcomes',
    );
    expect(results).toHaveLength(9);
    const outcome = (id: string) => results.filter((r) => r.actionId === id).map((r) => `${r.outcome}:${r.reason}`);
    expect(outcome('ok')).toEqual(['delivered:']);
    expect(outcome('later')).toEqual(['delivered:']);
    expect(outcome('flaky')).toEqual(['delivered:']);
    expect(outcome('oauth')).toEqual(['delivered:']);
    expect(outcome('limited').sort()).toEqual(['dead:capped', 'delivered:', 'delivered:'].sort());
    expect(outcome('down')).toEqual(['dead:http_status', 'dead:http_status']);
  }, 40_000);

  it('names histograms by their _bucket, _sum or _count series, and nothing else by those suffixes', async () => {
    const { types } = exposition(`${await scrape(workerUrl)}\n${await scrape(apiUrl)}`);
    for (const [name, where] of wantedMetrics()) {
      const base = name.replace(/_(bucket|sum|count)$/, '');
      if (base !== name && types.get(base) === 'histogram') continue;
      if (PROMETHEUS_SYNTHETIC.has(name)) continue;
      expect(types.get(name), `${name} (${where.join(', ')})`).toMatch(/^(counter|gauge)$/);
    }
  });

  it('carries the labels the queries group by', async () => {
    const text = await scrape(workerUrl);
    expect(text).toMatch(/^action_relay_jobs_total\{action="limited",outcome="dead"\} 1$/m);
    expect(text).toMatch(/^action_relay_dead_letters_total\{action="limited",reason="capped"\} 1$/m);
    expect(text).toMatch(/^action_relay_retries_total\{action="flaky",reason="http_status"\} 1$/m);
    expect(text).toMatch(/^action_relay_rate_limited_total\{action="(limited|down)"\} [1-9]/m);
    expect(text).toMatch(/^action_relay_circuit_state\{key="down-key"\} 1$/m);
    expect(text).toMatch(/^action_relay_token_refreshes_total\{action="oauth",outcome="ok"\} 1$/m);
    expect(text).toMatch(/^action_relay_http_requests_total\{action="down",status_class="5xx"\} 2$/m);
    const api = await scrape(apiUrl);
    expect(api).toMatch(/^action_relay_queue_jobs\{state="dlq"\} 3$/m);
    expect(api).toMatch(/^action_relay_oldest_waiting_seconds \d/m);
    // Read from Redis at scrape time, by the API as by the worker: one series per circuit state.
    for (const t of [text, api]) {
      expect(t).toMatch(/^action_relay_circuit\{key="down-key",state="open"\} 1$/m);
      expect(t).toMatch(/^action_relay_circuit\{key="down-key",state="closed"\} 0$/m);
      expect(t).toMatch(/^action_relay_redis_up 1$/m);
      expect(t).toMatch(/^action_relay_partition_jobs\{partition="0",state="dlq"\} 3$/m);
      // Nine results, none read by the consumer group yet.
      expect(t).toMatch(/^action_relay_results_stream_entries\{partition="0"\} 9$/m);
      expect(t).toMatch(/^action_relay_results_consumer_lag\{partition="0",group="journeys"\} 9$/m);
      expect(t).toMatch(/^action_relay_rate_limit_reserved_slots\{key="slow-key"\} \d+$/m);
    }
    // The jobs were enqueued through the API's context: enqueue RED counts them there.
    expect(api).toMatch(/^action_relay_enqueue_total\{result="accepted"\} 10$/m);
    expect(api).toMatch(/^action_relay_enqueue_duration_seconds_count\{kind="batch"\} 1$/m);
    expect(text).toMatch(/^action_relay_build_info\{version="[^"]+",node="v\d+[^"]*"\} 1$/m);
  });

  it('starts every counter of an action at 0 once a worker compiled it, so the first event moves increase()', async () => {
    const text = await scrape(workerUrl);
    // Events that cannot happen to `ok` (no rate limit, valid params, a receiver that answers):
    // their series exist all the same.
    expect(text).toMatch(/^action_relay_dead_letters_total\{action="ok",reason="capped"\} 0$/m);
    expect(text).toMatch(/^action_relay_dead_letters_total\{action="ok",reason="invalid_params"\} 0$/m);
    expect(text).toMatch(/^action_relay_retries_total\{action="ok",reason="network"\} 0$/m);
    expect(text).toMatch(/^action_relay_http_requests_total\{action="ok",status_class="3xx"\} 0$/m);
    expect(text).toMatch(/^action_relay_jobs_total\{action="limited",outcome="dead"\} 1$/m);
    expect(text).toMatch(/^action_relay_dead_letters_total\{action="limited",reason="unknown_action"\} 0$/m);
  });

  it('measures delivery latency from when the job became ready, not from its enqueue', async () => {
    const text = await scrape(workerUrl);
    const count = Number(/^action_relay_delivery_latency_seconds_count\{action="later"\} (\S+)$/m.exec(text)?.[1]);
    const sum = Number(/^action_relay_delivery_latency_seconds_sum\{action="later"\} (\S+)$/m.exec(text)?.[1]);
    expect(count).toBe(1);
    // The results entry's durationMs runs from the enqueue: the latency is that minus the delay the caller asked for.
    const entry = (await readResults(ctx)).find((r) => r.actionId === 'later');
    expect(Number(entry?.durationMs)).toBeGreaterThanOrEqual(DELAY_MS);
    expect(sum).toBeCloseTo((Number(entry?.durationMs) - DELAY_MS) / 1000, 3);
  });

  it('shows jobs in flight against WORKER_CONCURRENCY', async () => {
    const text = await scrape(workerUrl);
    expect(text).toMatch(/^action_relay_worker_concurrency 1$/m);
    expect(text).toMatch(/^action_relay_in_flight_jobs 0$/m);
    expect(await scrape(apiUrl)).not.toMatch(/^action_relay_in_flight_jobs/m);
  });

  it("answers the compose file's healthchecks (the same node commands, pointed at these ports)", async () => {
    const compose = readYaml<{ services: Record<string, { healthcheck: { test: string[] } }> }>('docker-compose.yml');
    const run = (service: string, url: string) => {
      const [, ...argv] = compose.services[service]?.healthcheck.test ?? [];
      const args = argv.slice(1).map((a) => a.replace(/http:\/\/127\.0\.0\.1:\d+/, url));
      return new Promise<number | null>((resolve) => spawn(process.execPath, args, { stdio: 'ignore' }).once('exit', resolve));
    };
    expect(await run('api', apiUrl)).toBe(0);
    expect(await run('worker', workerUrl)).toBe(0);
    expect(await run('receiver', receiver.url)).toBe(0);
    // And they fail when nothing answers.
    expect(await run('worker', `http://127.0.0.1:${await freePort()}`)).toBe(1);
  });
});
