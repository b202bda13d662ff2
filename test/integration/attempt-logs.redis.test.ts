import { afterAll, describe, expect, it } from 'vitest';
import { setupRun, startTestWorker, waitFor } from '../support/harness.js';

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

interface LogLine {
  level: number;
  msg: string;
  jobId?: string;
  actionId?: string;
  attempt?: number;
  status?: number | null;
  durationMs?: number;
  outcome?: string;
}

describe('attempt logs', () => {
  it('writes one JSON info line per attempt with jobId, actionId, attempt, status and durationMs', async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    let calls = 0;
    receiver.handler = (_r, res) => (++calls <= 2 ? res.writeHead(500).end('no') : res.writeHead(200).end('{}'));
    await ctx.store.put({
      id: 'logged',
      name: 'logged',
      endpoint: { url: receiver.url, method: 'POST' },
      body: {},
      retry: { maxAttempts: 5, backoff: { type: 'fixed', delayMs: 10, maxDelayMs: 10 } },
    });
    const lines: string[] = [];
    const worker = await startTestWorker(config, process.env, lines);
    cleanups.push(() => worker.stop());
    const { jobId } = await ctx.producer.enqueue({ actionId: 'logged', params: {} });
    await waitFor(async () => (await ctx.redis.xlen(ctx.keys.results)) >= 1, 10_000, 'outcome');
    await waitFor(() => lines.some((l) => l.includes('"outcome":"delivered"')), 5000, 'the delivered line');

    const parsed = lines.map((l) => JSON.parse(l) as LogLine);
    const mine = parsed.filter((l) => l.jobId === jobId && l.level === 30);
    expect(mine.map((l) => [l.attempt, l.status])).toEqual([
      [1, 500],
      [2, 500],
      [3, 200],
    ]);
    for (const l of mine) {
      expect(l.actionId).toBe('logged');
      expect(typeof l.durationMs).toBe('number');
    }
    expect(mine[0]?.msg).toBe('attempt 1 of 5 failed, retrying');
    expect(mine[2]?.outcome).toBe('delivered');
  });
});
