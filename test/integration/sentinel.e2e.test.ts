import { describe, expect, it } from 'vitest';
import { createApiServer } from '../../src/api/api-server.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import { spawnWorker, startReceiver, testConfig, testContext, trackRuns, waitFor } from '../support/harness.js';
import { endedJobs, entriesPerJob, startSentinelSet } from '../support/recovery.js';

const { children, cleanups } = trackRuns();

const TOTAL = 3000;
const BATCH = 30;
/** Pause between two enqueue batches: about 300 jobs/s, so that the failover falls mid-stream. */
const PACE_MS = 100;
/** The master is killed once the api has acknowledged this many. */
const KILL_AFTER = 1000;

describe('Redis Sentinel failover', () => {
  it('keeps the api and the workers going against the promoted replica, with no restart', async () => {
    const set = await startSentinelSet();
    cleanups.push(() => set.remove());
    const receiver = await startReceiver();
    receiver.handler = (_r, res) => setTimeout(() => res.writeHead(200).end('{}'), 5);
    const sentinelEnv = { REDIS_SENTINELS: set.addresses, REDIS_SENTINEL_MASTER: set.masterName };
    const config = testConfig(sentinelEnv);
    const ctx = await testContext(config);
    const sender = createHttpSender({ guard: ctx.egress });
    const api = await createApiServer({ ctx, sender });
    cleanups.push(async () => {
      await api.close();
      await sender.close();
      await ctx.close();
      await receiver.close();
    });
    await ctx.store.put({ id: 'ha', name: 'ha', endpoint: { url: receiver.url, path: '/ha', method: 'POST' }, body: { a: 1 } });
    const workers = [0, 1].map(() => spawnWorker(config, children, { ...sentinelEnv, WORKER_CONCURRENCY: '32' }));
    // Both workers delivering before the clock starts (process start-up is slow on a busy machine).
    await api.inject({
      method: 'POST',
      url: '/v1/jobs/batch',
      payload: {
        jobs: [
          { actionId: 'ha', params: {} },
          { actionId: 'ha', params: {} },
        ],
      },
    });
    await waitFor(() => receiver.requests.length >= 2, 60_000, 'the workers to deliver');

    // The api enqueues at a steady pace throughout; what it acknowledged (202) must be delivered.
    const acknowledged: { jobId: string; key: string; at: number }[] = [];
    let refused = 0;
    let lastRefusal = '';
    const enqueueing = (async () => {
      for (let i = 0; i < TOTAL; i += BATCH) {
        const jobs = Array.from({ length: BATCH }, (_, j) => ({ actionId: 'ha', params: {}, idempotencyKey: `ha-${i + j}` }));
        const res = await api.inject({ method: 'POST', url: '/v1/jobs/batch', payload: { jobs } });
        if (res.statusCode === 202) {
          const at = Date.now();
          (res.json() as { results: { jobId: string }[] }).results.forEach((r, j) =>
            acknowledged.push({ jobId: r.jobId, key: `ha-${i + j}`, at }),
          );
        } else {
          expect(res.json()).toMatchObject({ error: { code: 'redis_unavailable' } });
          refused += BATCH;
          lastRefusal = (res.json() as { error: { message: string } }).error.message;
        }
        await new Promise((r) => setTimeout(r, PACE_MS));
      }
    })();

    await waitFor(() => acknowledged.length >= KILL_AFTER, 60_000, `${KILL_AFTER} jobs acknowledged before the failover`);
    await set.master.kill('SIGKILL');
    const killedAt = Date.now();
    await waitFor(async () => (await set.masterPorts()).includes(set.replica.port), 30_000, 'the sentinels to promote the replica');
    const promotedAt = Date.now();
    await enqueueing;

    // The old master is dead: whatever the api acknowledged after the kill is on the promoted replica.
    const ackedAfterKill = acknowledged.filter((a) => a.at > killedAt);
    expect(ackedAfterKill.length, `${refused} refused, the last: ${lastRefusal}`).toBeGreaterThan(0);
    // Wait for every acknowledged job, or until no job has ended for 20 s: jobs whose last writes
    // the replica never got are gone. A read that meets the reconnect is simply made again.
    const want = new Set(acknowledged.map((a) => a.jobId));
    let entries: Awaited<ReturnType<typeof endedJobs>> = [];
    let lastProgress = Date.now();
    for (;;) {
      const read = await endedJobs(ctx).catch(() => undefined);
      if (read && read.length > entries.length) lastProgress = Date.now();
      entries = read ?? entries;
      if (new Set(entries.map((e) => e.jobId).filter((id) => want.has(id))).size >= want.size) break;
      if (Date.now() - lastProgress > 20_000) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const perJob = entriesPerJob(entries);
    const lost = acknowledged.filter((a) => !perJob.has(a.jobId));
    const diag = `${receiver.requests.length} requests received; the test's connection ${'status' in ctx.redis ? ctx.redis.status : ''}; ${entries.length} entries read`;
    expect(ackedAfterKill.filter((a) => perJob.get(a.jobId) !== 1).length, diag).toBe(0);
    // No job has two results entries on the promoted replica.
    expect([...perJob.values()].filter((n) => n > 1)).toEqual([]);
    expect(entries.every((e) => e.outcome === 'delivered')).toBe(true);
    // The same worker processes did it, none restarted.
    expect(workers.map((w) => w.exitCode)).toEqual([null, null]);

    const sent = new Map<string, number>();
    for (const r of receiver.requests)
      sent.set(String(r.headers['idempotency-key']), (sent.get(String(r.headers['idempotency-key'])) ?? 0) + 1);
    const duplicates = [...sent.values()].reduce((s, n) => s + n - 1, 0);
    const firstAfter = Math.min(...entries.filter((e) => e.at > killedAt).map((e) => e.at));
    const lastEnd = Math.max(...entries.map((e) => e.at));
    console.log(
      `sentinel failover: ${TOTAL} jobs offered through the api at ~${Math.round((BATCH * 1000) / PACE_MS)}/s, master SIGKILLed after ${KILL_AFTER} were acknowledged; ` +
        `replica promoted ${((promotedAt - killedAt) / 1000).toFixed(1)} s after the kill, first delivery on it ${((firstAfter - killedAt) / 1000).toFixed(1)} s after; ` +
        `${acknowledged.length} acknowledged (${ackedAfterKill.length} after the kill), ${refused} refused (503); ${lost.length} acknowledged jobs lost (${lost.filter((l) => sent.has(l.key)).length} of them delivered anyway), ` +
        `${duplicates} duplicate deliveries; last job ended ${((lastEnd - killedAt) / 1000).toFixed(1)} s after the kill; workers never restarted`,
    );
  }, 300_000);
});
