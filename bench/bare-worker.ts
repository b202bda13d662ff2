// The queue's ceiling: a BullMQ worker whose processor does nothing, at the same concurrency.
// Env: REDIS_URL, BENCH_PREFIX, BENCH_QUEUE, CONCURRENCY (default 64).
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';

const env = process.env;
const connection = new Redis(env.REDIS_URL ?? 'redis://127.0.0.1:6379', { maxRetriesPerRequest: null });
const worker = new Worker(env.BENCH_QUEUE ?? 'deliveries', async () => undefined, {
  connection,
  prefix: env.BENCH_PREFIX,
  concurrency: Number(env.CONCURRENCY ?? 64),
});
worker.on('error', (err) => console.error(err));
process.once('SIGTERM', () => void worker.close().then(() => process.exit(0)));
