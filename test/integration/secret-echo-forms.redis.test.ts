import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config/config.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import {
  readResults,
  removePrefixKeys,
  startReceiver,
  startTestWorker,
  testConfig,
  testContext,
  waitFor,
  type Receiver,
} from '../support/harness.js';

/* A secret echoed back in the JSON escaping of another language's encoder. Every key under this file's own prefix. */

const GO_SECRET = 'k3y&v<al>ue-9f1e-go';
const NUMERIC_SECRET = '48151623';
const env = { ...process.env, ACTION_SECRET_ECHO_GO_KEY: GO_SECRET, ACTION_SECRET_ECHO_NUMERIC_KEY: NUMERIC_SECRET };

let config: Config;
let ctx: RelayContext;
let receiver: Receiver;

beforeAll(async () => {
  config = testConfig({ ACTION_RELAY_PREFIX: `secret-echo-forms-${process.pid}` });
  ctx = await testContext(config, env);
  receiver = await startReceiver();
});

afterAll(async () => {
  await ctx.close();
  await receiver.close();
  await removePrefixKeys(config);
});

describe('a secret echoed back by a Go third party (& < > as \\u0026 \\u003c \\u003e)', () => {
  it('is masked in the dead-letter record', async () => {
    receiver.handler = (r, res) => {
      const key = String(r.headers['x-api-key'] ?? '');
      const goEscaped = JSON.stringify(`invalid key ${key}`).replace(/&/g, '\\u0026').replace(/</g, '\\u003c').replace(/>/g, '\\u003e');
      res.writeHead(403, { 'content-type': 'application/json' }).end(`{"error":${goEscaped}}`);
    };
    await ctx.store.put({
      id: 'echo_go',
      name: 'echo_go',
      endpoint: { url: receiver.url, path: '/items', method: 'POST' },
      auth: { type: 'apiKey', name: 'X-Api-Key', in: 'header', value: { env: 'ACTION_SECRET_ECHO_GO_KEY' } },
      body: { n: 1 },
      retry: { maxAttempts: 1 },
    });
    const worker = await startTestWorker(config, env);
    try {
      const { jobId } = await ctx.producer.enqueue({ actionId: 'echo_go', params: {} });
      await waitFor(async () => (await readResults(ctx)).some((r) => r.jobId === jobId), 20_000, 'the outcome');
      expect(receiver.requests.at(-1)?.headers['x-api-key']).toBe(GO_SECRET);
      const record = JSON.stringify(await ctx.deadLetters.get(jobId));
      expect(record).toContain('invalid key');
      expect(record).not.toContain('k3y\\\\u0026v\\\\u003cal\\\\u003eue-9f1e-go');
      expect(record).not.toContain('9f1e-go');
    } finally {
      await worker.stop();
    }
  });
});

describe('captured fields beside a numeric secret', () => {
  it("keep a value that only ends with the secret's first digits, and mask the secret itself", async () => {
    // 99481 ends with "481", the first digits of the key: a parsed number was never cut short.
    receiver.handler = (_r, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(`{"orderNumber":99481,"quantity":481,"echo":${NUMERIC_SECRET}}`);
    };
    await ctx.store.put({
      id: 'echo_numeric',
      name: 'echo_numeric',
      endpoint: { url: receiver.url, path: '/orders', method: 'POST' },
      auth: { type: 'apiKey', name: 'X-Api-Key', in: 'header', value: { env: 'ACTION_SECRET_ECHO_NUMERIC_KEY' } },
      body: { n: 1 },
      response: { fields: { orderNumber: { type: 'integer' }, quantity: { type: 'integer' }, echo: { type: 'integer' } } },
    });
    const worker = await startTestWorker(config, env);
    try {
      const { jobId } = await ctx.producer.enqueue({ actionId: 'echo_numeric', params: {} });
      await waitFor(async () => (await readResults(ctx)).some((r) => r.jobId === jobId), 20_000, 'the outcome');
      const result = (await readResults(ctx)).find((r) => r.jobId === jobId);
      expect(result?.outcome).toBe('delivered');
      expect(JSON.parse(String(result?.response))).toEqual({ orderNumber: 99481, quantity: 481, echo: '***' });
    } finally {
      await worker.stop();
    }
  });
});
