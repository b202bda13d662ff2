// `npm run soak -- --minutes N [--rate R]`: steady traffic through one real `action-relay worker`
// process for N minutes, on the bench's private Redis, printing once a minute what must level off
// when retention does its job: worker RSS and heap, event-loop lag p99, Redis memory, and the
// sizes of the results stream, the dead letters and the queue. Not part of CI.
import { createServer } from 'node:http';
import { cpus, loadavg } from 'node:os';
import { request } from 'undici';
import { createRelayContext, loadConfig } from '../src/index.js';
import { startMockReceiver } from '../src/demo/mock-receiver.js';
import { freePort } from '../src/redis/embedded-redis.js';
import { scriptArgs, startLab } from './lab.js';
import { redisUsedMemory } from './proc-stats.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : fallback;
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} must be a positive number`);
  return v;
}

const minutes = arg('minutes', 20);
const rate = arg('rate', 50);
/** Retention short enough to reach its steady state within a few minutes of soak. */
const RETENTION = {
  JOB_RETENTION_SECONDS: '120',
  RESULTS_MAXLEN: '20000',
  DLQ_MAX_AGE_DAYS: '0.002',
  IDEMPOTENCY_TTL_SECONDS: '120',
};

/** The sum of every series of one metric on a Prometheus text page; NaN when absent. */
function readMetric(text: string, name: string): number {
  let total = 0;
  let found = false;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) {
      total += Number(line.slice(line.lastIndexOf(' ') + 1));
      found = true;
    }
  }
  return found ? total : Number.NaN;
}

/** Least-squares slope of ys over xs. */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  if (n < 2) return 0;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += ((xs[i] as number) - mx) * ((ys[i] as number) - my);
    den += ((xs[i] as number) - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

const mb = (bytes: number) => (bytes / 1024 / 1024).toFixed(1);

async function main() {
  const lab = await startLab();
  const flaky = await startMockReceiver({ failureRate: 0.05 });
  // The client errors of the mix: a third party refusing the request (dead-lettered at once).
  const refusing = createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(422, { 'content-type': 'application/json' }).end('{"error":"unprocessable"}'));
  });
  await new Promise<void>((r) => refusing.listen(0, '127.0.0.1', () => r()));
  const refusingPort = (refusing.address() as { port: number }).port;

  const prefix = 'soak';
  // Retention is set where jobs are enqueued (BullMQ keeps it in each job's options): the producer's too.
  const config = loadConfig({
    REDIS_URL: lab.redisUrl,
    ACTION_RELAY_PREFIX: prefix,
    LOG_LEVEL: 'silent',
    EGRESS_ALLOW_PRIVATE: 'true',
    ...RETENTION,
  });
  const ctx = await createRelayContext(config, { processMetrics: false });
  const retry = { maxAttempts: 4, backoff: { type: 'fixed', delayMs: 1000, maxDelayMs: 1000 } };
  await ctx.store.put({
    id: 'soak_sms',
    name: 'soak sms (5 % 503)',
    endpoint: { url: flaky.url, path: '/sms/send', method: 'POST' },
    parameters: { text: { type: 'string', required: true } },
    body: { text: '{{params.text}}' },
    response: { fields: { messageId: { type: 'string' } } },
    retry,
  });
  await ctx.store.put({
    id: 'soak_crm',
    name: 'soak crm',
    endpoint: { url: lab.sink.url, method: 'POST' },
    parameters: { text: { type: 'string', required: true } },
    body: { text: '{{params.text}}' },
    retry,
  });
  await ctx.store.put({
    id: 'soak_reject',
    name: 'soak 422',
    endpoint: { url: `http://127.0.0.1:${refusingPort}`, path: '/x', method: 'POST' },
    parameters: { text: { type: 'string', required: true } },
    body: { text: '{{params.text}}' },
    retry,
  });

  const metricsPort = await freePort();
  const worker = lab.spawnChild([...scriptArgs('action-relay'), 'worker'], {
    REDIS_URL: lab.redisUrl,
    ACTION_RELAY_PREFIX: prefix,
    METRICS_PORT: String(metricsPort),
    WORKER_CONCURRENCY: '64',
    EGRESS_ALLOW_PRIVATE: 'true',
    LOG_LEVEL: 'warn',
    ...RETENTION,
  });

  // Steady traffic: every 200 ms a fifth of the rate, 80 % sms, 18 % crm, 2 % refused; every tenth with an idempotency key.
  let enqueued = 0;
  let refused = 0;
  const tick = setInterval(() => {
    const n = Math.round(rate / 5);
    const jobs = Array.from({ length: n }, () => {
      const i = enqueued++;
      const roll = i % 50;
      const actionId = roll === 0 ? 'soak_reject' : roll < 10 ? 'soak_crm' : 'soak_sms';
      return {
        actionId,
        params: { text: `message ${i}` },
        context: { journeyId: 'soak', profileId: `p-${i % 10_000}` },
        ...(i % 10 === 0 ? { idempotencyKey: `k-${i}` } : {}),
      };
    });
    ctx.producer.enqueueMany(jobs).then(
      (r) => (refused += r.filter((x) => 'error' in x).length),
      (err: unknown) => process.stderr.write(`enqueue failed: ${String(err)}\n`),
    );
  }, 200);

  console.log(
    `soak: ${minutes} min at ${rate} jobs/s (80 % sms with 5 % 503, 18 % crm, 2 % answered 422), one worker (concurrency 64), ` +
      `${cpus().length} cores shared with whatever else runs (load ${loadavg()[0]?.toFixed(1)}); retention ${JSON.stringify(RETENTION)}`,
  );
  console.log('min  enqueued  delivered  dead  rssMB  heapMB  lagP99ms  redisMB  results  dlq  waiting  active  delayed');
  const started = Date.now();
  const rows: { t: number; rss: number; redis: number; heap: number }[] = [];
  for (let m = 1; m <= minutes; m++) {
    await new Promise((r) => setTimeout(r, started + m * 60_000 - Date.now()));
    const text = await (await request(`http://127.0.0.1:${metricsPort}/metrics`)).body.text();
    const jobsOf = (outcome: string) =>
      text
        .split('\n')
        .filter((l) => l.startsWith('action_relay_jobs_total{') && l.includes(`outcome="${outcome}"`))
        .reduce((s, l) => s + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
    const rss = readMetric(text, 'process_resident_memory_bytes');
    const heap = readMetric(text, 'nodejs_heap_size_used_bytes');
    const lag = readMetric(text, 'nodejs_eventloop_lag_p99_seconds');
    const redisMem = await redisUsedMemory(lab.admin);
    const [results, dlq, counts] = await Promise.all([
      ctx.redis.xlen(ctx.keys.results),
      ctx.redis.zcard(ctx.keys.dlq),
      ctx.queue.getJobCounts('waiting', 'prioritized', 'active', 'delayed'),
    ]);
    rows.push({ t: m, rss, redis: redisMem, heap });
    console.log(
      [
        String(m).padStart(3),
        String(enqueued).padStart(9),
        String(jobsOf('delivered')).padStart(10),
        String(jobsOf('dead')).padStart(5),
        mb(rss).padStart(6),
        mb(heap).padStart(7),
        (lag * 1000).toFixed(1).padStart(9),
        mb(redisMem).padStart(8),
        String(results).padStart(8),
        String(dlq).padStart(4),
        String((counts.waiting ?? 0) + (counts.prioritized ?? 0)).padStart(8),
        String(counts.active ?? 0).padStart(7),
        String(counts.delayed ?? 0).padStart(8),
      ].join(' '),
    );
  }
  clearInterval(tick);
  // Slopes over the second half, once retention has reached its steady state.
  const half = rows.slice(Math.floor(rows.length / 2));
  const t = half.map((r) => r.t);
  console.log(
    `slopes over minutes ${half[0]?.t ?? 0}-${rows.at(-1)?.t ?? 0}: worker RSS ${mb(
      slope(
        t,
        half.map((r) => r.rss),
      ),
    )} MB/min, ` +
      `heap ${mb(
        slope(
          t,
          half.map((r) => r.heap),
        ),
      )} MB/min, Redis ${mb(
        slope(
          t,
          half.map((r) => r.redis),
        ),
      )} MB/min; ` +
      `${refused} jobs refused at enqueue; load now ${loadavg()[0]?.toFixed(1)}`,
  );
  await lab.endChild(worker);
  await ctx.close();
  await flaky.close();
  await new Promise<void>((r) => refusing.close(() => r()));
  await lab.stop();
}

await main();
