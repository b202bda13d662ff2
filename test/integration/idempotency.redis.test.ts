import { describe, expect, it } from 'vitest';
import { Webhook } from 'standardwebhooks';
import { readResults, setupRun, startTestWorker, trackRuns, waitFor } from '../support/harness.js';

const { cleanups } = trackRuns();

const secret = `whsec_${Buffer.from('idempotency-signing-key-01234567').toString('base64')}`;
const env = { ...process.env, ACTION_SECRET_IDEM_SIGN: secret };

describe('idempotency per action', () => {
  it('makes two jobs of one key on two actions, one job of one key given twice to the same action', async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    const signed = (id: string) => ({
      id,
      name: id,
      endpoint: { url: receiver.url, path: `/${id}`, method: 'POST' },
      body: { what: id },
      signing: { secrets: [{ env: 'ACTION_SECRET_IDEM_SIGN' }] },
    });
    await ctx.store.put(signed('send_sms'));
    await ctx.store.put(signed('update_crm'));

    // A journey using its order id as the key of two steps.
    const sms = await ctx.producer.enqueue({ actionId: 'send_sms', params: {}, idempotencyKey: 'order-77' });
    const crm = await ctx.producer.enqueue({ actionId: 'update_crm', params: {}, idempotencyKey: 'order-77' });
    expect(sms.deduplicated).toBe(false);
    expect(crm.deduplicated).toBe(false);
    expect(crm.jobId).not.toBe(sms.jobId);
    // The same step enqueued again (a journey engine retrying its call) is the first job.
    expect(await ctx.producer.enqueue({ actionId: 'send_sms', params: {}, idempotencyKey: 'order-77' })).toEqual({
      jobId: sms.jobId,
      deduplicated: true,
    });
    // The batch route deduplicates the same way, across and within batches.
    const batch = await ctx.producer.enqueueMany([
      { actionId: 'update_crm', params: {}, idempotencyKey: 'order-77' },
      { actionId: 'send_sms', params: {}, idempotencyKey: 'order-78' },
      { actionId: 'update_crm', params: {}, idempotencyKey: 'order-78' },
    ]);
    expect(batch[0]).toEqual({ jobId: crm.jobId, deduplicated: true });
    expect(batch.slice(1).map((r) => 'jobId' in r && r.deduplicated)).toEqual([false, false]);

    const worker = await startTestWorker(config, env);
    cleanups.push(() => worker.stop());
    const results = await waitFor(
      async () => {
        const all = await readResults(ctx);
        return all.length >= 4 ? all : undefined;
      },
      15_000,
      'four jobs to end',
    );
    expect(results.map((r) => r.outcome)).toEqual(['delivered', 'delivered', 'delivered', 'delivered']);
    const byPath = (path: string) => receiver.requests.filter((r) => r.url === path);
    expect(byPath('/send_sms')).toHaveLength(2);
    expect(byPath('/update_crm')).toHaveLength(2);
    // Both headers carry the caller's key as given, not the per-action lookup key.
    for (const r of receiver.requests) {
      expect(r.headers['idempotency-key']).toBe(r.headers['webhook-id']);
      expect(['order-77', 'order-78']).toContain(r.headers['webhook-id']);
      const headers = {
        'webhook-id': String(r.headers['webhook-id']),
        'webhook-timestamp': String(r.headers['webhook-timestamp']),
        'webhook-signature': String(r.headers['webhook-signature']),
      };
      expect(new Webhook(secret).verify(r.body, headers)).toEqual(JSON.parse(r.body));
    }
    expect(receiver.requests.map((r) => `${r.url} ${String(r.headers['idempotency-key'])}`).sort()).toEqual([
      '/send_sms order-77',
      '/send_sms order-78',
      '/update_crm order-77',
      '/update_crm order-78',
    ]);
  });
});
