import { execFile } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { createProducer, ValidationError, type RelayProducer } from '../../src/producer.js';
import { startTestWorker, trackRuns, setupRun, waitFor } from '../support/harness.js';
import { packagesLoadedBy } from '../support/loaded-packages.js';

const run = promisify(execFile);
const root = join(import.meta.dirname, '..', '..');
const builtEntry = join(root, 'dist', 'src', 'producer.js');

/** Newest modification time of the .ts files under a folder. */
function newestSource(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && e.name.endsWith('.ts')) newest = Math.max(newest, statSync(join(e.parentPath, e.name)).mtimeMs);
  }
  return newest;
}

describe('action-relay/producer', () => {
  const { cleanups } = trackRuns();

  it('loads bullmq, ioredis and zod, and none of the api or worker packages', { timeout: 180_000 }, async () => {
    // CI builds dist/ in `npm ci` (prepare); a stale or missing build is rebuilt here.
    if (!existsSync(builtEntry) || statSync(builtEntry).mtimeMs < newestSource(join(root, 'src'))) {
      await run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'tsconfig.json')], {
        cwd: root,
      });
    }
    const loaded = await packagesLoadedBy(pathToFileURL(builtEntry), 'createProducer', { cwd: root });
    // The hook works: what enqueueing needs is there.
    expect(loaded).toEqual(expect.arrayContaining(['bullmq', 'ioredis', 'zod']));
    const heavy = [
      'fastify',
      '@fastify/swagger',
      '@fastify/swagger-ui',
      '@bull-board/api',
      '@bull-board/fastify',
      'pino',
      'pino-pretty',
      'prom-client',
      'undici',
      'commander',
      'yaml',
      '@opentelemetry/api',
      '@opentelemetry/sdk-trace-base',
    ];
    expect(loaded.filter((p) => heavy.includes(p))).toEqual([]);
  });

  it('enqueues typed jobs and reads their results, by cursor and by consumer group', async () => {
    const { receiver, config, ctx } = await setupRun(cleanups);
    await ctx.store.put({
      id: 'slim',
      name: 'slim',
      endpoint: { url: receiver.url, method: 'POST' },
      parameters: { n: { type: 'integer', required: true } },
      body: { n: '{{params.n}}' },
    });
    const producer: RelayProducer = await createProducer({
      redisUrl: config.REDIS_URL,
      prefix: config.ACTION_RELAY_PREFIX,
      onWarning: () => undefined,
    });
    cleanups.push(() => producer.close());

    const one = await producer.enqueue({ actionId: 'slim', params: { n: 1 }, context: { journeyId: 'j1' }, idempotencyKey: 'slim-1' });
    const again = await producer.enqueue({ actionId: 'slim', params: { n: 1 }, idempotencyKey: 'slim-1' });
    expect(again).toEqual({ jobId: one.jobId, deduplicated: true });
    const many = await producer.enqueueMany([
      { actionId: 'slim', params: { n: 2 } },
      { actionId: 'slim', params: { n: 'two' } },
    ]);
    expect(many[0]).toMatchObject({ deduplicated: false });
    expect(many[1]).toMatchObject({ error: { code: 'validation_failed', details: [{ path: 'jobs[1].params.n' }] } });
    await expect(producer.enqueue({ actionId: 'nope', params: {} })).rejects.toBeInstanceOf(ValidationError);

    const group = await producer.resultsGroup('journeys', 'engine-1');
    const worker = await startTestWorker(config);
    cleanups.push(() => worker.stop());

    const read = await waitFor(
      async () => {
        const r = await producer.readResults({ after: 'start' });
        return r.entries.length >= 2 ? r : undefined;
      },
      15_000,
      'two results',
    );
    const first = read.entries.find((e) => e.jobId === one.jobId);
    expect(first).toMatchObject({
      actionId: 'slim',
      outcome: 'delivered',
      status: 200,
      attempts: 1,
      context: { journeyId: 'j1' },
      partition: 0,
    });
    expect(typeof first?.durationMs).toBe('number');
    // Reading on from the cursor finds nothing new.
    const next = await producer.readResults({ after: read.cursor });
    expect(next.entries).toEqual([]);
    expect(next.cursor).toEqual(read.cursor);

    const batch = await group.read({ count: 10 });
    expect(batch.entries.map((e) => e.jobId).sort()).toEqual(read.entries.map((e) => e.jobId).sort());
    expect(await group.read({ which: 'pending' })).toMatchObject({
      entries: expect.arrayContaining([expect.objectContaining({ jobId: one.jobId })]),
    });
    expect(await group.ack(batch.entries)).toBe(batch.entries.length);
    expect((await group.read({ which: 'pending' })).entries).toEqual([]);
  });
});
