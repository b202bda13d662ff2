import { describe, expect, it } from 'vitest';
import type { RelayContext } from '../../src/context/relay-context.js';
import { readResults, setupRun, startTestWorker, trackRuns, waitFor, type Receiver } from '../support/harness.js';

/*
 * Per-key ordering: the cases the existing ordering tests do not drive through a worker:
 * a head that ends dead at once, a head deferred by a Retry-After pause, by its rate limit and by an
 * open circuit, an action deleted while its jobs wait in line, and idempotency inside one batch.
 */

const { cleanups } = trackRuns();

type Seen = { seq: number; status: number };

/** Logs every request's seq and the status answered, in the order answered. */
function logReceiver(receiver: Receiver, answer: (seq: number, nth: number) => { status: number; headers?: Record<string, string> }) {
  const seen: Seen[] = [];
  const counts = new Map<number, number>();
  receiver.handler = (req, res) => {
    const { seq } = JSON.parse(req.body) as { seq: number };
    const nth = (counts.get(seq) ?? 0) + 1;
    counts.set(seq, nth);
    const a = answer(seq, nth);
    seen.push({ seq, status: a.status });
    res.writeHead(a.status, { 'content-type': 'application/json', ...(a.headers ?? {}) }).end('{}');
  };
  return seen;
}

async function put(ctx: RelayContext, receiver: Receiver, id: string, extra: Record<string, unknown> = {}) {
  await ctx.store.put({
    id,
    name: id,
    endpoint: { url: receiver.url, path: '/x', method: 'POST' },
    parameters: { seq: { type: 'integer', required: true } },
    body: { seq: '{{params.seq}}' },
    retry: { maxAttempts: 3, backoff: { type: 'fixed', delayMs: 200, maxDelayMs: 2000 }, retryOn: [429, 503] },
    ...extra,
  });
}

async function ended(ctx: RelayContext, n: number, timeoutMs = 45_000) {
  return waitFor(
    async () => {
      const all = await readResults(ctx);
      return all.length >= n ? all : undefined;
    },
    timeoutMs,
    `${n} results entries`,
  );
}

/** Each job's first request comes after its predecessor's last answer. */
function inOrder(seen: Seen[], n: number): string[] {
  const bad: string[] = [];
  for (let s = 1; s < n; s++) {
    const first = seen.findIndex((e) => e.seq === s);
    const prevLast = seen.map((e) => e.seq).lastIndexOf(s - 1);
    if (first < 0) bad.push(`${s} never sent`);
    else if (prevLast > first) bad.push(`${s} sent before ${s - 1} ended`);
  }
  return bad;
}

describe('ordering lines through a worker', () => {
  it('a head answered 400 ends dead at once and its line moves on, in order', { timeout: 60_000 }, async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    await put(ctx, receiver, 'dead_head');
    const seen = logReceiver(receiver, (seq) => ({ status: seq === 0 ? 400 : 200 }));
    const r = await ctx.producer.enqueueMany([0, 1, 2].map((seq) => ({ actionId: 'dead_head', params: { seq }, orderingKey: 'p' })));
    const worker = await startTestWorker(config);
    cleanups.push(() => worker.stop());
    const all = await ended(ctx, 3);
    expect(all.map((e) => e.outcome)).toEqual(['dead', 'delivered', 'delivered']);
    expect(all.map((e) => e.jobId)).toEqual(r.map((x) => ('jobId' in x ? x.jobId : '')));
    expect(inOrder(seen, 3)).toEqual([]);
    expect(await ctx.redis.exists(ctx.keys.orderingLine('dead_head', 'p'))).toBe(0);
  });

  it('a head whose stored data is malformed ends dead and its line still moves on', { timeout: 60_000 }, async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    await put(ctx, receiver, 'bad_head');
    const seen = logReceiver(receiver, () => ({ status: 200 }));
    const r = await ctx.producer.enqueueMany([0, 1].map((seq) => ({ actionId: 'bad_head', params: { seq }, orderingKey: 'q' })));
    const [head] = r.map((x) => ('jobId' in x ? x.jobId : ''));
    // Written by something else than the producer: params is not an object.
    await ctx.redis.hset(ctx.keys.jobKey(head as string), 'data', JSON.stringify({ params: 'seq=0', context: {}, orderingKey: 'q' }));
    const worker = await startTestWorker(config);
    cleanups.push(() => worker.stop());
    const all = await ended(ctx, 2);
    expect(all.map((e) => `${e.outcome} ${e.reason}`)).toEqual(['dead invalid_params', 'delivered ']);
    expect(seen.map((e) => e.seq)).toEqual([1]);
    expect(await ctx.redis.exists(ctx.keys.orderingLine('bad_head', 'q'))).toBe(0);
  });

  it('a head paused by a 429 Retry-After holds its line until it is delivered', { timeout: 60_000 }, async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    await put(ctx, receiver, 'paused_head');
    const seen = logReceiver(receiver, (seq, nth) =>
      seq === 0 && nth === 1 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 200 },
    );
    await ctx.producer.enqueueMany([0, 1, 2].map((seq) => ({ actionId: 'paused_head', params: { seq }, orderingKey: 'p' })));
    const worker = await startTestWorker(config);
    cleanups.push(() => worker.stop());
    const all = await ended(ctx, 3);
    expect(all.map((e) => e.outcome)).toEqual(['delivered', 'delivered', 'delivered']);
    expect(inOrder(seen, 3)).toEqual([]);
  });

  it('jobs deferred by their rate limit keep their order', { timeout: 60_000 }, async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    await put(ctx, receiver, 'limited', { rateLimit: { max: 1, perMs: 1200 } });
    const seen = logReceiver(receiver, () => ({ status: 200 }));
    await ctx.producer.enqueueMany([0, 1, 2, 3].map((seq) => ({ actionId: 'limited', params: { seq }, orderingKey: 'p' })));
    const worker = await startTestWorker(config);
    cleanups.push(() => worker.stop());
    await ended(ctx, 4);
    expect(seen.map((s) => s.seq)).toEqual([0, 1, 2, 3]);
  });

  it(
    'an action deleted while its jobs wait in line: each ends dead unknown_action, nothing left in line',
    { timeout: 60_000 },
    async () => {
      const { receiver, config, ctx } = await setupRun(cleanups);
      await put(ctx, receiver, 'gone');
      await ctx.producer.enqueueMany([0, 1, 2].map((seq) => ({ actionId: 'gone', params: { seq }, orderingKey: 'p' })));
      await ctx.store.delete('gone');
      const worker = await startTestWorker(config);
      cleanups.push(() => worker.stop());
      const all = await ended(ctx, 3);
      expect(all.map((e) => `${e.outcome}/${e.reason}`)).toEqual(['dead/unknown_action', 'dead/unknown_action', 'dead/unknown_action']);
      expect(receiver.requests).toHaveLength(0);
      expect(await ctx.redis.hlen(ctx.keys.orderingJobs)).toBe(0);
      expect(await ctx.redis.exists(ctx.keys.orderingLine('gone', 'p'))).toBe(0);
    },
  );

  it('one batch, one idempotency key: the first job of the list is the one kept, whether or not it has an orderingKey', async () => {
    const { receiver, ctx } = await setupRun(cleanups);
    await put(ctx, receiver, 'batch_idem');
    const r = await ctx.producer.enqueueMany([
      { actionId: 'batch_idem', params: { seq: 0 }, idempotencyKey: 'step-1' },
      { actionId: 'batch_idem', params: { seq: 1 }, idempotencyKey: 'step-1', orderingKey: 'p' },
    ]);
    // docs/journey-engine.md: enqueueing the same key again returns the first job (deduplicated: true).
    expect(
      r.map((x) => ('jobId' in x ? x.deduplicated : 'error')),
      'the first job of the batch must not be the duplicate',
    ).toEqual([false, true]);
  });
});
