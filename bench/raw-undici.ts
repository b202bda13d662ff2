// The HTTP ceiling: undici Pool requests to the sink with no queue at all, `CONCURRENCY` in flight.
// Driven by run.ts over IPC: { n, bytes } runs n requests; the answer { done, failed } follows.
import { Pool } from 'undici';
import { buildParams } from './payload.js';

const concurrency = Number(process.env.CONCURRENCY ?? 64);
const sink = new URL(process.env.SINK_URL ?? 'http://127.0.0.1:8080/deliver');
const pool = new Pool(sink.origin, { connections: concurrency });

async function run(n: number, bytes: number): Promise<{ done: number; failed: number }> {
  const params = buildParams(0, bytes);
  let next = 0;
  let failed = 0;
  async function lane(): Promise<void> {
    while (next < n) {
      next += 1;
      const res = await pool.request({
        path: sink.pathname,
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(params),
      });
      await res.body.json();
      if (res.statusCode >= 300) failed += 1;
    }
  }
  await Promise.all(Array.from({ length: concurrency }, lane));
  return { done: n, failed };
}

process.on('message', (msg: { n: number; bytes: number }) => {
  void run(msg.n, msg.bytes).then((r) => process.send?.(r));
});
process.once('SIGTERM', () => void pool.close().then(() => process.exit(0)));
process.send?.({ ready: true });
