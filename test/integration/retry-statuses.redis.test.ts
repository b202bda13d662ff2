import { describe, expect, it } from 'vitest';
import { readResults, setupRun, startReceiver, startTestWorker, trackRuns, waitFor } from '../support/harness.js';

/*
 * The retry policy as a real worker applies it: the default retryOn list (no `retryOn` in the
 * definitions below), Retry-After on 429 and 503, a token endpoint's 5xx, and replay spacing.
 * Each case has an exact expectation, so a status dropped from a list or a spacing set to zero fails.
 */

const { cleanups } = trackRuns();

const FAST_RETRY = { maxAttempts: 3, backoff: { type: 'fixed', delayMs: 50, maxDelayMs: 10_000 } };

async function run() {
  const setup = await setupRun(cleanups);
  const worker = await startTestWorker(setup.config);
  cleanups.push(() => worker.stop());
  return setup;
}

describe('retry statuses', () => {
  it('retries 408, 425, 429, 500, 502, 503 and 504 by default, and dead-letters 400, 401, 403, 404 and 422 at once', async () => {
    const { receiver, ctx } = await run();
    const seen = new Map<string, number>();
    receiver.handler = (req, res) => {
      const key = String(req.headers['idempotency-key']);
      const n = (seen.get(key) ?? 0) + 1;
      seen.set(key, n);
      const status = Number((JSON.parse(req.body) as { s: number }).s);
      if (n === 1) return res.writeHead(status, { 'content-type': 'application/json' }).end('{}');
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    };
    await ctx.store.put({
      id: 'statuses',
      name: 'statuses',
      endpoint: { url: receiver.url, path: '/s', method: 'POST' },
      parameters: { s: { type: 'integer', required: true } },
      body: { s: '{{params.s}}' },
      retry: FAST_RETRY,
    });
    const retried = [408, 425, 429, 500, 502, 503, 504];
    const final = [400, 401, 403, 404, 422];
    const jobs = await ctx.producer.enqueueMany([...retried, ...final].map((s) => ({ actionId: 'statuses', params: { s } })));
    const ids = jobs.map((j) => ('jobId' in j ? j.jobId : ''));
    const results = await waitFor(
      async () => {
        const r = await readResults(ctx);
        return r.length === ids.length ? r : undefined;
      },
      30_000,
      'every job ended',
    );
    const byStatus = new Map(ids.map((id, i) => [[...retried, ...final][i], results.find((r) => r.jobId === id)]));
    for (const s of retried) expect({ s, ...byStatus.get(s) }).toMatchObject({ s, outcome: 'delivered', attempts: '2' });
    for (const s of final)
      expect({ s, ...byStatus.get(s) }).toMatchObject({ s, outcome: 'dead', reason: 'http_status', status: String(s), attempts: '1' });
  });

  for (const status of [429, 503]) {
    it(`waits out a Retry-After on ${status} (longer than the backoff), using an attempt`, async () => {
      const { receiver, ctx } = await run();
      receiver.handler = (_req, res) =>
        receiver.requests.length === 1
          ? res.writeHead(status, { 'retry-after': '2', 'content-type': 'application/json' }).end('{}')
          : res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      await ctx.store.put({
        id: 'after',
        name: 'after',
        endpoint: { url: receiver.url, path: '/a', method: 'POST' },
        body: { a: 1 },
        retry: FAST_RETRY,
      });
      await ctx.producer.enqueue({ actionId: 'after', params: {} });
      const [r] = await waitFor(async () => {
        const all = await readResults(ctx);
        return all.length === 1 ? all : undefined;
      }, 30_000);
      expect(r).toMatchObject({ outcome: 'delivered', attempts: '2' });
      const [first, second] = receiver.requests;
      // The backoff alone would retry after 50 ms; Retry-After says 2 s (a loaded machine only adds).
      expect((second?.at ?? 0) - (first?.at ?? 0)).toBeGreaterThanOrEqual(1900);
    });
  }

  it("retries a token endpoint's 5xx instead of dead-lettering with reason auth", async () => {
    const { receiver, ctx } = await run();
    const tokens = await startReceiver();
    cleanups.push(() => tokens.close());
    tokens.handler = (_req, res) =>
      tokens.requests.length === 1
        ? res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":"busy"}')
        : res.writeHead(200, { 'content-type': 'application/json' }).end('{"access_token":"tok-ok-123456","expires_in":3600}');
    receiver.handler = (req, res) =>
      req.headers.authorization === 'Bearer tok-ok-123456' ? res.writeHead(200).end('{}') : res.writeHead(401).end('{}');
    process.env.ACTION_SECRET_RETRY_TEST_CLIENT = 'client-secret-value-42';
    cleanups.push(async () => void delete process.env.ACTION_SECRET_RETRY_TEST_CLIENT);
    await ctx.store.put({
      id: 'tokened',
      name: 'tokened',
      endpoint: { url: receiver.url, path: '/t', method: 'POST' },
      auth: {
        type: 'oauth2ClientCredentials',
        tokenUrl: `${tokens.url}/token`,
        clientId: 'c',
        clientSecret: { env: 'ACTION_SECRET_RETRY_TEST_CLIENT' },
      },
      body: { a: 1 },
      retry: FAST_RETRY,
    });
    await ctx.producer.enqueue({ actionId: 'tokened', params: {} });
    const [r] = await waitFor(async () => {
      const all = await readResults(ctx);
      return all.length === 1 ? all : undefined;
    }, 30_000);
    expect(r).toMatchObject({ outcome: 'delivered', attempts: '2' });
    expect(tokens.requests).toHaveLength(2);
  });
});

describe('replay spacing', () => {
  it('spreads replayed jobs at ratePerSecond', async () => {
    const { receiver, ctx } = await run();
    receiver.handler = (_req, res) => res.writeHead(400, { 'content-type': 'application/json' }).end('{}');
    await ctx.store.put({ id: 'bad', name: 'bad', endpoint: { url: receiver.url, path: '/b', method: 'POST' }, body: { a: 1 } });
    const jobs = await ctx.producer.enqueueMany(Array.from({ length: 5 }, () => ({ actionId: 'bad', params: {} })));
    const ids = jobs.map((j) => ('jobId' in j ? j.jobId : ''));
    await waitFor(async () => (await ctx.deadLetters.getMany(ids)).length === 5, 30_000, 'five dead letters');
    // Paused, so that the replayed jobs stay where the replay put them.
    await ctx.queue.pause();
    const records = await ctx.deadLetters.getMany(ids);
    const replays = await ctx.deadLetters.replay(records, { ratePerSecond: 10 });
    const delays = await Promise.all(replays.map(async (r) => (await ctx.queue.getJob(r.jobId))?.opts.delay ?? 0));
    expect(delays).toEqual([0, 100, 200, 300, 400]);
  });
});
