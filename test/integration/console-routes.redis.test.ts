import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiServer } from '../../src/api/api-server.js';
import { parseTokensFile, tokenDigest } from '../../src/api/api-tokens.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import { setupRun, type Receiver } from '../support/harness.js';

/* The console's own routes (docs/console.md, "Routes of the console"), and the token names its session relies on. */

const cleanups: (() => Promise<void>)[] = [];
let receiver: Receiver;
let ctx: RelayContext;
let api: FastifyInstance;

beforeAll(async () => {
  const run = await setupRun(cleanups);
  receiver = run.receiver;
  ctx = run.ctx;
  api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
  cleanups.push(() => api.close());
  await ctx.store.put({ id: 'console_a', name: 'a', endpoint: { url: receiver.url, path: '/a', method: 'POST' } });
});

afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

describe('POST /console/api/jobs', () => {
  it.each(['events', 'id', 'meta', 'stalled-check'])(
    "answers a job id such as %s, which names one of BullMQ's own keys, as unknown: never a 500",
    async (jobId) => {
      // A job enqueued once: BullMQ's events stream, id counter and meta hash exist.
      await ctx.producer.enqueue({ actionId: 'console_a', params: {} });
      const res = await api.inject({ method: 'POST', url: '/console/api/jobs', payload: { jobIds: [jobId] } });
      expect(res.statusCode, res.body).toBe(200);
      expect(res.json()).toEqual({ items: [{ jobId, state: 'unknown' }] });
    },
  );
});

describe('POST /console/api/validate', () => {
  it.each([['null'], ['[]'], ['"text"'], ['5'], ['{}'], ['{"id":5}']])('answers %s with problems, never a 500', async (payload) => {
    const res = await api.inject({
      method: 'POST',
      url: '/console/api/validate',
      headers: { 'content-type': 'application/json' },
      payload,
    });
    expect(res.statusCode, res.body).toBeLessThan(500);
  });
});

describe('token names', () => {
  it("a tokens file may not name a token ADMIN_TOKEN: a session cookie names its token, and would carry ADMIN_TOKEN's scopes", () => {
    const reader = 'console-reader-token-0123456789';
    expect(() => parseTokensFile(`tokens:\n  - { name: ADMIN_TOKEN, sha256: ${tokenDigest(reader)}, scopes: [read] }\n`)).toThrow(
      /API_TOKENS_FILE: tokens\[0\]\.name: the name "ADMIN_TOKEN" is reserved/,
    );
  });
});
