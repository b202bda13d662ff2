import { describe, expect, it } from 'vitest';
import { getJobStatus } from '../../src/queue/job-status.js';
import { readResults, setupRun, spawnWorker, trackRuns, waitFor } from '../support/harness.js';

/*
 * errorResponse through a real worker process: the third party's JSON error body reaches the
 * journey engine on the results stream, and the operator in the dead letter and the job status.
 */

const { children, cleanups } = trackRuns();

describe('errorResponse', () => {
  it('a 422 with a JSON error body: the dead job carries the declared fields everywhere', { timeout: 45_000 }, async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    receiver.handler = (req, res) => {
      const { phone } = JSON.parse(req.body) as { phone: string };
      if (phone === 'bad') {
        res
          .writeHead(422, { 'content-type': 'application/json' })
          .end(JSON.stringify({ code: 'E422', error: { detail: 'invalid phone number' }, attempt: 'x' }));
      } else if (phone === 'html') {
        res.writeHead(400, { 'content-type': 'text/html' }).end('<h1>Bad request</h1>');
      } else res.writeHead(200, { 'content-type': 'application/json' }).end('{"id":"m1"}');
    };
    await ctx.store.put({
      id: 'sms',
      name: 'send sms',
      endpoint: { url: receiver.url, path: '/messages', method: 'POST' },
      parameters: { phone: { type: 'string', required: true } },
      body: { phone: '{{params.phone}}' },
      errorResponse: {
        fields: { code: { type: 'string' }, detail: { type: 'string', path: 'error.detail' }, attempt: { type: 'integer' } },
      },
    });
    spawnWorker(config, children);
    const bad = await ctx.producer.enqueue({ actionId: 'sms', params: { phone: 'bad' }, context: { profileId: 'p1' } });
    const html = await ctx.producer.enqueue({ actionId: 'sms', params: { phone: 'html' } });
    const good = await ctx.producer.enqueue({ actionId: 'sms', params: { phone: '+33600000000' } });

    const entries = await waitFor(
      async () => {
        const all = await readResults(ctx);
        return all.length >= 3 ? all : undefined;
      },
      30_000,
      'three results entries',
    );
    const byJob = new Map(entries.map((e) => [e.jobId, e]));
    const dead = byJob.get(bad.jobId);
    expect(dead).toMatchObject({ outcome: 'dead', status: '422', reason: 'http_status' });
    // Both declared fields; `attempt` is a string where an integer was declared: left out, no error.
    expect(JSON.parse(dead?.errorResponse ?? '')).toEqual({ code: 'E422', detail: 'invalid phone number' });
    // A body that is not JSON gives none; a delivered job has none.
    expect(byJob.get(html.jobId)).toMatchObject({ outcome: 'dead', status: '400', errorResponse: '{}' });
    expect(byJob.get(good.jobId)).toMatchObject({ outcome: 'delivered', errorResponse: '{}' });

    const record = await ctx.deadLetters.get(bad.jobId);
    expect(record?.errorResponse).toEqual({ code: 'E422', detail: 'invalid phone number' });
    const status = await getJobStatus(ctx.queues, ctx.redis, bad.jobId);
    expect(status?.state).toBe('dead');
    expect(status?.error?.errorResponse).toEqual({ code: 'E422', detail: 'invalid phone number' });
  });
});
