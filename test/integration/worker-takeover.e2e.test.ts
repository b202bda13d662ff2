import type { ServerResponse } from 'node:http';
import { describe, expect, it } from 'vitest';
import { kill, setupRun, spawnWorker, trackRuns, waitFor } from '../support/harness.js';
import { endedJobs, entriesPerJob } from '../support/recovery.js';

const { children, cleanups } = trackRuns();

const JOBS = 400;
const CONCURRENCY = 100;
/** The receiver answers each request after this long, once the kill is done. */
const ANSWER_MS = 1000;

describe('a SIGKILLed worker', () => {
  it('has its in-flight jobs taken over by another worker, each ending once, with the default lock settings', async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    let aborted = 0;
    // Requests are held until both workers have their full concurrency in flight (process
    // start-up is slow on a busy machine), then answered after ANSWER_MS.
    let holding = true;
    const held: ServerResponse[] = [];
    receiver.handler = (_r, res) => {
      // A request whose worker died before the answer: the socket closes with the response unsent.
      res.once('close', () => {
        if (!res.writableFinished) aborted += 1;
      });
      if (holding) held.push(res);
      else setTimeout(() => res.writeHead(200).end('{}'), ANSWER_MS);
    };
    await ctx.store.put({
      id: 'takeover',
      name: 'takeover',
      endpoint: { url: receiver.url, path: '/t', method: 'POST', timeoutMs: 120_000 },
      body: { a: 1 },
    });
    const jobs = Array.from({ length: JOBS }, (_, i) => ({ actionId: 'takeover', params: {}, idempotencyKey: `k-${i}` }));
    const ids = (await ctx.producer.enqueueMany(jobs)).map((r) => ('jobId' in r ? r.jobId : ''));

    // The shipped lock settings (JOB_LOCK_MS unset); held requests must not time out.
    const env = { WORKER_CONCURRENCY: String(CONCURRENCY), REQUEST_TIMEOUT_CAP_MS: '120000' };
    const victim = spawnWorker(config, children, env);
    spawnWorker(config, children, env);
    await waitFor(() => held.length >= 2 * CONCURRENCY, 90_000, `${2 * CONCURRENCY} requests in flight`);
    await kill(victim, 'SIGKILL');
    const killedAt = Date.now();
    const seenAtKill = new Set(receiver.requests.map((r) => String(r.headers['idempotency-key'])));
    holding = false;
    for (const res of held.splice(0)) if (!res.destroyed) res.writeHead(200).end('{}');
    await waitFor(() => aborted > 0, 5000, 'the receiver to see the dead worker’s sockets close');

    // Every job ends once within 30 s of the kill: the bound for the shipped defaults.
    const entries = await waitFor(
      async () => {
        const all = await endedJobs(ctx);
        return new Set(all.map((e) => e.jobId)).size >= JOBS ? all : undefined;
      },
      30_000,
      'every job to end',
    );
    const perJob = entriesPerJob(entries);
    expect(ids.filter((id) => perJob.get(id) !== 1)).toEqual([]);
    expect(entries.every((e) => e.outcome === 'delivered')).toBe(true);

    const count = new Map<string, number>();
    const firstRerun = new Map<string, number>();
    for (const r of receiver.requests) {
      const key = String(r.headers['idempotency-key']);
      count.set(key, (count.get(key) ?? 0) + 1);
      if (r.at > killedAt && seenAtKill.has(key) && !firstRerun.has(key)) firstRerun.set(key, r.at);
    }
    expect(jobs.filter((j) => !count.has(j.idempotencyKey))).toEqual([]);
    const duplicates = [...count.values()].reduce((sum, n) => sum + n - 1, 0);
    // Only what the dead worker had in flight can be sent twice.
    expect(duplicates).toBeLessThanOrEqual(CONCURRENCY);
    expect(duplicates).toBeGreaterThan(0);

    const reruns = [...firstRerun.values()].map((at) => (at - killedAt) / 1000);
    const lastEnd = Math.max(...entries.map((e) => e.at));
    console.log(
      `worker takeover: ${JOBS} jobs, ${ANSWER_MS} ms endpoint, ${CONCURRENCY} per worker; SIGKILL with ${aborted} of its requests open at the receiver; ` +
        `their jobs ran again ${Math.min(...reruns).toFixed(1)}-${Math.max(...reruns).toFixed(1)} s after the kill; ` +
        `every job ended once, the last ${((lastEnd - killedAt) / 1000).toFixed(1)} s after the kill; ${duplicates} duplicate deliveries`,
    );
  }, 150_000);
});
