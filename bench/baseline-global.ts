// Baseline: the same 30-line delivery loop as baseline-pool.ts, written with undici's global `request`
// (the global dispatcher) instead of a Pool: what the undici README shows first.
// Env: REDIS_URL, BENCH_PREFIX, BENCH_QUEUE, SINK_URL, CONCURRENCY (default 64).
import { Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { request } from 'undici';

const env = process.env;
const concurrency = Number(env.CONCURRENCY ?? 64);
const sink = new URL(env.SINK_URL ?? 'http://127.0.0.1:8080/deliver');

async function deliver(job: Job<{ params: Record<string, unknown> }>): Promise<string> {
  const res = await request(sink, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': job.id ?? '' },
    body: JSON.stringify(job.data.params),
  });
  const answer = (await res.body.json()) as { id?: string };
  if (res.statusCode >= 300) throw new Error(`HTTP ${res.statusCode}`);
  return answer.id ?? '';
}

const connection = new Redis(env.REDIS_URL ?? 'redis://127.0.0.1:6379', { maxRetriesPerRequest: null });
const worker = new Worker(env.BENCH_QUEUE ?? 'deliveries', deliver, { connection, prefix: env.BENCH_PREFIX, concurrency });
worker.on('error', (err) => console.error(err));
process.once('SIGTERM', () => void worker.close().then(() => process.exit(0)));
