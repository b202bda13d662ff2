import { createServer } from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { JOB_FIELDS } from '../../src/queue/bullmq-internals.js';
import { ACTIVITY_TTL_SECONDS, MAX_FINISH_BATCH, createOutcomeWriter, type Outcome } from '../../src/queue/outcome-writer.js';
import { freePort } from '../../src/redis/embedded-redis.js';
import { relayKeys } from '../../src/redis/redis-connection.js';
import { redisRefusal } from '../../src/redis/redis-refusal.js';
import { setupRun, waitFor } from '../support/harness.js';
import { startOwnedRedis } from '../support/recovery.js';
import { monitorCommands } from '../support/redis-monitor.js';

// The delivered jobs that end in one event-loop turn leave as one finish command. Each job must
// still end exactly once and get its own answer, whatever the others of its command got.
const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

function delivered(jobId: string, idempotencyKey?: string): Outcome {
  return {
    jobId,
    actionId: 'a',
    outcome: 'delivered',
    status: 200,
    reason: '',
    attempts: 1,
    durationMs: 5,
    context: { journeyId: 'j-1' },
    response: { id: jobId },
    idempotencyKey: idempotencyKey ?? jobId,
  };
}

/** The EVALSHA and EVAL commands that name `keyPart`, as Redis runs them (MONITOR, on a connection of its own). */
async function watchScripts(
  url: string,
  keyPart: string,
): Promise<{ calls: string[][]; seen(n: number): Promise<void>; stop(): Promise<void> }> {
  const calls: string[][] = [];
  const monitor = await monitorCommands(url, (args) => {
    const name = String(args[0]).toLowerCase();
    if ((name === 'evalsha' || name === 'eval') && args.some((a) => a.includes(keyPart))) calls.push(args);
  });
  return {
    calls,
    /** Until `n` calls are in, then a little longer for any that should not be there (MONITOR's lines trail the answers). */
    async seen(n) {
      await waitFor(() => calls.length >= n, 2000, `${n} finish commands on MONITOR`);
      await new Promise((r) => setTimeout(r, 50));
    },
    async stop() {
      monitor.stop();
    },
  };
}

describe('finishing delivered jobs in one command per event-loop turn', () => {
  it('ends each job once, answers each caller for its own job, and sends one command per turn', async () => {
    const { ctx, config } = await setup();
    const jobs = await ctx.producer.enqueueMany(
      Array.from({ length: 40 }, (_, i) => ({ actionId: 'a', params: {}, ...(i % 2 ? { idempotencyKey: `k-${i}` } : {}) })),
    );
    const ids = jobs.map((j) => ('jobId' in j ? j.jobId : ''));
    const key = (i: number) => (i % 2 ? `k-${i}` : undefined);
    // Three jobs ended earlier (a rerun after a crash finds them ended).
    expect(await Promise.all([0, 7, 20].map((i) => ctx.outcomes.finish(ctx.keys, delivered(ids[i] as string, key(i)))))).toEqual([
      true,
      true,
      true,
    ]);

    const watch = await watchScripts(config.REDIS_URL, ctx.keys.results);
    cleanups.push(() => watch.stop());
    // All 40 in one turn, and job 5 twice: its second finish comes after its first in the same command.
    const answers = await Promise.all([
      ...ids.map((id, i) => ctx.outcomes.finish(ctx.keys, delivered(id, key(i)))),
      ctx.outcomes.finish(ctx.keys, delivered(ids[5] as string, key(5))),
    ]);
    expect(answers).toEqual([...ids.map((_, i) => ![0, 7, 20].includes(i)), false]);
    await watch.seen(1);
    expect(watch.calls).toHaveLength(1);

    const entries = await ctx.redis.xrange(ctx.keys.results, '-', '+');
    expect(entries).toHaveLength(40);
    const byJob = new Map(entries.map(([, f]) => [f[f.indexOf('jobId') + 1], f]));
    expect(byJob.size).toBe(40);
    ids.forEach((id, i) => {
      const fields = byJob.get(id) as string[];
      expect(fields[fields.indexOf('idempotencyKey') + 1]).toBe(key(i) ?? id);
      expect(JSON.parse(fields[fields.indexOf('response') + 1] as string)).toEqual({ id });
    });
    for (const id of ids) expect(await ctx.redis.hget(ctx.keys.jobKey(id as string), JOB_FIELDS.outcome)).toBe('delivered');
    expect(await ctx.redis.hgetall(ctx.keys.outcomeCounts)).toEqual({ delivered: '40' });
  });

  it(`splits a turn's jobs into commands of at most ${MAX_FINISH_BATCH}`, async () => {
    const { ctx, config } = await setup();
    const count = MAX_FINISH_BATCH + 3;
    const ids: string[] = [];
    for (let start = 0; start < count; start += 100) {
      const jobs = await ctx.producer.enqueueMany(
        Array.from({ length: Math.min(100, count - start) }, () => ({ actionId: 'a', params: {} })),
      );
      for (const j of jobs) ids.push('jobId' in j ? j.jobId : '');
    }
    // Loads the script, so that the count below holds no NOSCRIPT retry.
    expect(await ctx.outcomes.finish(ctx.keys, delivered(ids.pop() as string))).toBe(true);
    const watch = await watchScripts(config.REDIS_URL, ctx.keys.results);
    cleanups.push(() => watch.stop());
    const answers = await Promise.all(ids.map((id) => ctx.outcomes.finish(ctx.keys, delivered(id))));
    expect(answers.every((a) => a)).toBe(true);
    await watch.seen(2);
    expect(watch.calls.map((args) => Number(args[2]) - 3)).toEqual([MAX_FINISH_BATCH, ids.length - MAX_FINISH_BATCH]);
    expect(await ctx.redis.xlen(ctx.keys.results)).toBe(count);
  });

  it('counts the jobs that ended now once per action, with their retries, as finishing one at a time would', async () => {
    const { ctx } = await setup();
    const jobs = await ctx.producer.enqueueMany(Array.from({ length: 8 }, () => ({ actionId: 'a', params: {} })));
    const ids = jobs.map((j) => ('jobId' in j ? j.jobId : ''));
    // Jobs 0-5: even ones action a's, odd ones b's, job i took i + 1 attempts. Jobs 6 and 7: action
    // c's, one attempt each (no retries to count); job 7's hash is gone (ended and counted all the same).
    const outcome = (i: number): Outcome =>
      i < 6
        ? { ...delivered(ids[i] as string), actionId: i % 2 ? 'b' : 'a', attempts: i + 1 }
        : { ...delivered(ids[i] as string), actionId: 'c' };
    await ctx.redis.del(ctx.keys.jobKey(ids[7] as string));
    const first = Math.floor(Date.now() / 60_000);
    expect(await ctx.outcomes.finish(ctx.keys, outcome(0))).toBe(true);
    // One command: seven jobs, job 3 again and job 0 again (ended already: counted once).
    expect(await Promise.all([1, 2, 3, 4, 5, 6, 7, 3, 0].map((i) => ctx.outcomes.finish(ctx.keys, outcome(i))))).toEqual([
      ...[1, 2, 3, 4, 5, 6, 7].map(() => true),
      false,
      false,
    ]);
    expect(await ctx.redis.xlen(ctx.keys.results)).toBe(8);
    expect(await ctx.redis.hgetall(ctx.keys.outcomeCounts)).toEqual({ delivered: '8' });
    expect(await activityCounts(ctx, first)).toEqual({ 'a|d': 3, 'a|r': 6, 'b|d': 3, 'b|r': 9, 'c|d': 2 });
  });

  it('fails only the jobs of an action whose counts cannot be written, and counts the others', async () => {
    const { ctx } = await setup();
    const jobs = await ctx.producer.enqueueMany(Array.from({ length: 4 }, () => ({ actionId: 'a', params: {} })));
    const ids = jobs.map((j) => ('jobId' in j ? j.jobId : ''));
    const outcome = (i: number): Outcome => ({ ...delivered(ids[i] as string), actionId: i % 2 ? 'b' : 'a' });
    // Read before job 0 is counted: a minute that turns between the two would leave its count unread.
    const first = Math.floor(Date.now() / 60_000);
    expect(await ctx.outcomes.finish(ctx.keys, outcome(0))).toBe(true);
    // Action b's counter holds no integer, in this minute's hash and the next one's.
    for (const minute of [first, first + 1]) await ctx.redis.hset(ctx.keys.activity(minute), 'b|d', 'not a number');
    const answers = await Promise.allSettled([1, 2, 3, 0].map((i) => ctx.outcomes.finish(ctx.keys, outcome(i))));
    expect(answers.map((a) => (a.status === 'fulfilled' ? a.value : String(a.reason)))).toEqual([
      expect.stringMatching(/not an integer/),
      true,
      expect.stringMatching(/not an integer/),
      false,
    ]);
    // Each job has its one entry; b's jobs, run again, find themselves ended.
    expect(await ctx.redis.xlen(ctx.keys.results)).toBe(4);
    expect(await Promise.all([1, 3].map((i) => ctx.outcomes.finish(ctx.keys, outcome(i))))).toEqual([false, false]);
    expect(await ctx.redis.xlen(ctx.keys.results)).toBe(4);
    const counts = await activityCounts(ctx, first);
    expect(counts['a|d']).toBe(2);
  });

  it('fails only the job that errs (before any write of its own), so that it can run again', async () => {
    const { ctx } = await setup();
    const jobs = await ctx.producer.enqueueMany(Array.from({ length: 6 }, () => ({ actionId: 'a', params: {} })));
    const ids = jobs.map((j) => ('jobId' in j ? j.jobId : ''));
    // The results stream's key holds a string: every job's XADD fails.
    await ctx.redis.set(ctx.keys.results, 'not a stream');
    const refused = await Promise.allSettled(ids.map((id) => ctx.outcomes.finish(ctx.keys, delivered(id))));
    for (const r of refused) expect(r.status === 'rejected' && String(r.reason)).toMatch(/WRONGTYPE/);
    // Nothing half done: no job is marked ended, nothing counted.
    for (const id of ids) expect(await ctx.redis.hget(ctx.keys.jobKey(id), JOB_FIELDS.outcome)).toBeNull();
    expect(await ctx.redis.hgetall(ctx.keys.outcomeCounts)).toEqual({});

    await ctx.redis.del(ctx.keys.results);
    // One job's hash is no hash: that job fails, the others of its command end.
    const broken = ids[2] as string;
    const saved = await ctx.redis.hgetall(ctx.keys.jobKey(broken));
    await ctx.redis.del(ctx.keys.jobKey(broken));
    await ctx.redis.set(ctx.keys.jobKey(broken), 'not a hash');
    const rerun = await Promise.allSettled(ids.map((id) => ctx.outcomes.finish(ctx.keys, delivered(id))));
    expect(rerun.map((r) => (r.status === 'fulfilled' ? r.value : String(r.reason).includes('WRONGTYPE')))).toEqual(ids.map(() => true));
    expect(rerun.map((r) => r.status)).toEqual(ids.map((id) => (id === broken ? 'rejected' : 'fulfilled')));

    // Its next run ends it, once.
    await ctx.redis.del(ctx.keys.jobKey(broken));
    await ctx.redis.hset(ctx.keys.jobKey(broken), saved);
    expect(await ctx.outcomes.finish(ctx.keys, delivered(broken))).toBe(true);
    expect(await ctx.outcomes.finish(ctx.keys, delivered(broken))).toBe(false);
    expect(await ctx.redis.xlen(ctx.keys.results)).toBe(ids.length);
    expect(await ctx.redis.hgetall(ctx.keys.outcomeCounts)).toEqual({ delivered: String(ids.length) });
  });

  it("fails the whole command on Redis's own refusal, as the client's reconnect-on-READONLY expects", async () => {
    // A replica whose master is gone: it reads, and refuses every write with READONLY. The master's
    // port is held by a listener that hangs up, so that no other test's server can take it.
    const masterPort = await freePort();
    const hangUp = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => hangUp.listen(masterPort, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => hangUp.close(() => resolve())));
    const replica = await startOwnedRedis(['--save', '', '--appendonly', 'no', '--replicaof', '127.0.0.1', String(masterPort)]);
    cleanups.push(() => replica.remove());
    const seen: string[] = [];
    const client = new Redis(replica.url, {
      maxRetriesPerRequest: 1,
      reconnectOnError: (err) => {
        seen.push(err.message);
        return false;
      },
    });
    cleanups.push(async () => client.disconnect());
    const keys = relayKeys('{fb-ro}');
    const writer = createOutcomeWriter(client, 1000);
    const answers = await Promise.allSettled(['j1', 'j2', 'j3'].map((id) => writer.finish(keys, delivered(id))));
    for (const a of answers) expect(a.status === 'rejected' && String(a.reason)).toMatch(/^ReplyError: READONLY/);
    // One error reply for the command (not three answers inside a reply): the client saw it.
    expect(seen.filter((m) => m.startsWith('READONLY'))).toHaveLength(1);
    expect(redisRefusal((answers[0] as PromiseRejectedResult).reason)).toMatch(/read-only replica/);
  });

  it('leaves nothing written when a full Redis refuses the command', async () => {
    const full = await startOwnedRedis(['--save', '', '--appendonly', 'no']);
    cleanups.push(() => full.remove());
    const client = new Redis(full.url, { maxRetriesPerRequest: 1 });
    cleanups.push(async () => client.disconnect());
    const keys = relayKeys('{fb-oom}');
    for (const id of ['j1', 'j2']) await client.hset(keys.jobKey(id), 'data', '{}');
    // Whatever it holds is over a 1-byte limit: every write is refused, reads are not.
    await client.config('SET', 'maxmemory-policy', 'noeviction');
    await client.config('SET', 'maxmemory', '1');
    const writer = createOutcomeWriter(client, 1000);
    const answers = await Promise.allSettled(['j1', 'j2'].map((id) => writer.finish(keys, delivered(id))));
    for (const a of answers) expect(a.status === 'rejected' && String(a.reason)).toMatch(/OOM/);
    // The same error for both: the command's, not one per job.
    expect((answers[1] as PromiseRejectedResult).reason).toBe((answers[0] as PromiseRejectedResult).reason);
    expect(redisRefusal((answers[0] as PromiseRejectedResult).reason)).toMatch(/out of memory/);
    await client.config('SET', 'maxmemory', '0');
    for (const id of ['j1', 'j2']) expect(await client.hget(keys.jobKey(id), JOB_FIELDS.outcome)).toBeNull();
    expect(await client.exists(keys.results, keys.outcomeCounts)).toBe(0);
  });
});

async function setup() {
  const run = await setupRun(cleanups);
  await run.ctx.store.put({ id: 'a', name: 'a', endpoint: { url: run.receiver.url, method: 'POST' } });
  return run;
}

/** The per-minute activity counters of this minute and the next (the minute may turn during a test), summed; each such hash must expire within ACTIVITY_TTL_SECONDS. */
async function activityCounts(ctx: Awaited<ReturnType<typeof setup>>['ctx'], minute: number): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const m of [minute, minute + 1]) {
    const key = ctx.keys.activity(m);
    // Only what the scripts counted: a test may have planted a field that holds no number.
    const counted = Object.entries(await ctx.redis.hgetall(key)).filter(([, v]) => /^\d+$/.test(v));
    if (counted.length === 0) continue;
    const ttl = await ctx.redis.ttl(key);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(ACTIVITY_TTL_SECONDS);
    for (const [f, v] of counted) counts[f] = (counts[f] ?? 0) + Number(v);
  }
  return counts;
}
