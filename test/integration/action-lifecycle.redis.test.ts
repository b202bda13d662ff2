import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { applyActionsDir } from '../../src/actions/action-files.js';
import { createApiServer } from '../../src/api/api-server.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import {
  readResults,
  removePrefixKeys,
  setupRun,
  testConfig,
  testContext,
  startTestWorker,
  trackRuns,
  waitFor,
} from '../support/harness.js';

/*
 * The action lifecycle: what a worker and the producer make of a stored definition from an older
 * version or one the schema refuses, ACTIONS_DIR handing an action back, and /test answering safely.
 */

const { cleanups } = trackRuns();

describe('action lifecycle', () => {
  it(
    'a stored definition from an older version (a field since defaulted is missing) is read with the default: enqueued and delivered',
    { timeout: 60_000 },
    async () => {
      const { receiver, config, ctx } = await setupRun(cleanups);
      // As an older version (or a hand edit) left it: no `parameters` (a field with a default today).
      const definition = {
        id: 'legacy',
        name: 'legacy',
        endpoint: { url: receiver.url, path: '/legacy', method: 'POST', timeoutMs: 10_000 },
        auth: { type: 'none' },
        allowNulls: false,
        retry: { maxAttempts: 4, backoff: { type: 'exponential', delayMs: 1000, maxDelayMs: 300_000 }, retryOn: [503] },
      };
      await ctx.redis.hset(ctx.keys.actions, 'legacy', JSON.stringify({ version: 1, updatedAt: Date.now(), definition }));
      const { jobId } = await ctx.producer.enqueue({ actionId: 'legacy', params: {} });
      const worker = await startTestWorker(config);
      cleanups.push(() => worker.stop());
      const entry = await waitFor(async () => (await readResults(ctx)).find((e) => e.jobId === jobId), 40_000, 'the legacy job to end');
      expect({ outcome: entry.outcome, attempts: entry.attempts }).toEqual({ outcome: 'delivered', attempts: '1' });
      expect(receiver.requests.map((r) => r.url)).toEqual(['/legacy']);
    },
  );

  it(
    'a stored definition the schema refuses: enqueue is a ValidationError naming the field, and a job queued before ends dead unknown_action at its first attempt',
    { timeout: 60_000 },
    async () => {
      const { receiver, config, ctx } = await setupRun(cleanups);
      const definition = { id: 'broken', name: 'broken', endpoint: { url: receiver.url, path: '/broken', method: 'BREW' } };
      await ctx.redis.hset(ctx.keys.actions, 'broken', JSON.stringify({ version: 1, updatedAt: Date.now(), definition }));

      const enqueued = await ctx.producer.enqueue({ actionId: 'broken', params: {} }).then(
        () => 'accepted',
        (err: unknown) =>
          `${(err as Error).constructor.name}: ${JSON.stringify((err as { problems?: unknown }).problems ?? (err as Error).message)}`,
      );
      expect(enqueued).toMatch(/^ValidationError: .*endpoint\.method/);

      // A job queued before (the same data the producer writes), run by a worker.
      await ctx.queue.add('broken', { params: {}, context: {} }, { jobId: 'broken-job-1', priority: 1 });
      const worker = await startTestWorker(config);
      cleanups.push(() => worker.stop());
      const entry = await waitFor(async () => (await readResults(ctx)).find((e) => e.jobId === 'broken-job-1'), 40_000, 'the job to end');
      expect({ reason: entry.reason, attempts: entry.attempts }).toEqual({ reason: 'unknown_action', attempts: '1' });
      expect(receiver.requests).toHaveLength(0);
    },
  );

  it('ACTIONS_DIR: an action whose file is gone is handed back to the API even when it no longer passes the egress check', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'actions-dir-'));
    const config = testConfig();
    const ctx = await testContext(config);
    const strict = testConfig({ ACTION_RELAY_PREFIX: config.ACTION_RELAY_PREFIX, EGRESS_ALLOW_HOSTS: '' });
    const strictCtx = await testContext(strict);
    try {
      writeFileSync(
        join(dir, 'local.json'),
        JSON.stringify({ id: 'local_crm', name: 'local', endpoint: { url: 'http://127.0.0.1:9/', method: 'POST' } }),
      );
      const first = await applyActionsDir(ctx.store, dir);
      expect(first.applied.map((a) => a.id)).toEqual(['local_crm']);

      // The file is removed; the api now runs with a stricter egress policy (loopback no longer allowed).
      rmSync(join(dir, 'local.json'));
      const again = await applyActionsDir(strictCtx.store, dir).then(
        (r) => `released ${r.released.join(',')}`,
        (err: unknown) => `threw ${(err as Error).constructor.name}: ${(err as Error).message}`,
      );
      // run-api's apply loop takes a thrown ValidationError for "Redis lost half way" and retries it every second, for ever.
      expect(again, 'applying ACTIONS_DIR after the file is gone').toBe('released local_crm');
      expect((await strictCtx.store.get('local_crm'))?.managedBy ?? '').toBe('');
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await strictCtx.close();
      await ctx.close();
      await removePrefixKeys(config);
    }
  });

  it('/test of an action whose secret also appears as a number in the body answers, secrets masked (no 500)', async () => {
    const env = { ...process.env, ACTION_SECRET_LIFECYCLE_PIN: '20250101' };
    const { receiver, config } = await setupRun(cleanups);
    const ctx = await testContext(config, env);
    const api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
    try {
      await ctx.store.put({
        id: 'pin_action',
        name: 'pin',
        endpoint: { url: receiver.url, path: '/pin', method: 'POST' },
        auth: { type: 'apiKey', name: 'x-api-key', value: { env: 'ACTION_SECRET_LIFECYCLE_PIN' }, in: 'header' },
        parameters: { day: { type: 'integer', required: true } },
        body: { day: '{{params.day}}' },
      });
      const res = await api.inject({ method: 'POST', url: '/v1/actions/pin_action/test', payload: { params: { day: 20250101 } } });
      expect(res.statusCode, res.body).toBe(200);
      expect(res.body).not.toContain('20250101');
    } finally {
      await api.close();
      await ctx.close();
    }
  });
});

describe('action lifecycle, the api process', () => {
  it(
    'ACTIONS_DIR at start: a gone file whose action fails the egress check does not leave the apply retrying for ever',
    { timeout: 30_000 },
    async () => {
      const { runApi } = await import('../../src/cli/run-api.js');
      const dir = mkdtempSync(join(tmpdir(), 'actions-dir-'));
      const config = testConfig();
      const ctx = await testContext(config);
      const strict = testConfig({
        ACTION_RELAY_PREFIX: config.ACTION_RELAY_PREFIX,
        EGRESS_ALLOW_HOSTS: '',
        ACTIONS_DIR: dir,
        PORT: '0',
        HOST: '127.0.0.1',
      });
      const strictCtx = await testContext(strict);
      let api: Awaited<ReturnType<typeof runApi>> | undefined;
      try {
        writeFileSync(
          join(dir, 'local.json'),
          JSON.stringify({ id: 'local_crm', name: 'local', endpoint: { url: 'http://127.0.0.1:9/', method: 'POST' } }),
        );
        await applyActionsDir(ctx.store, dir);
        rmSync(join(dir, 'local.json'));
        api = await runApi(strict, strictCtx);
        const settled = await Promise.race([
          api.actionsApplied.then(
            () => 'applied',
            (err: unknown) => `refused: ${(err as Error).message}`,
          ),
          new Promise<string>((r) => setTimeout(() => r('still retrying after 8 s'), 8000)),
        ]);
        expect(settled, 'ACTIONS_DIR applied at start').not.toBe('still retrying after 8 s');
      } finally {
        await api?.stop().catch(() => undefined);
        rmSync(dir, { recursive: true, force: true });
        await strictCtx.close().catch(() => undefined);
        await ctx.close();
        await removePrefixKeys(config);
      }
    },
  );
});

describe('action ids through the api', () => {
  it('refuses ids with path characters, unicode or over 64 characters, naming the field', async () => {
    const { receiver, ctx } = await setupRun(cleanups);
    const api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
    try {
      for (const id of ['a.b', 'caf%C3%A9', 'a%2Fb', 'x'.repeat(65)]) {
        const res = await api.inject({
          method: 'PUT',
          url: `/v1/actions/${id}`,
          payload: { name: 'n', endpoint: { url: receiver.url, method: 'POST' } },
        });
        expect(res.statusCode, `${id}: ${res.body}`).toBe(400);
        expect(res.json().error.details?.[0]?.path, id).toBe('id');
      }
      expect((await ctx.store.list()).length).toBe(0);
    } finally {
      await api.close();
    }
  });
});
