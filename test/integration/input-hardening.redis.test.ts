import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createApiServer } from '../../src/api/api-server.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import { MAX_DEFINITION_BYTES } from '../../src/actions/action-store.js';
import type { Config } from '../../src/config/config.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import { MAX_JSON_DEPTH } from '../../src/api/json-body.js';
import { readResults, removePrefixKeys, startReceiver, startTestWorker, testConfig, testContext, waitFor } from '../support/harness.js';

const run = promisify(execFile);
const FIFTY_MB = 50 * 1024 * 1024;
const CHUNK = Buffer.alloc(64 * 1024, 'x');

/**
 * A loopback third party that answers every request with 50 MB, and counts what it managed to
 * hand to the kernel before the client hung up: a client that stops reading stops that count.
 */
interface Firehose {
  url: string;
  /** Bytes written per response, in request order. */
  written: number[];
  requests: number;
  close(): Promise<void>;
}

async function startFirehose(opts: { declareLength: boolean }): Promise<Firehose> {
  const hose: Firehose = { url: '', written: [], requests: 0, close: async () => undefined };
  const server: Server = createServer((req, res) => {
    req.resume();
    const index = hose.requests++;
    hose.written[index] = 0;
    res.writeHead(200, {
      'content-type': 'application/json',
      ...(opts.declareLength ? { 'content-length': String(FIFTY_MB) } : {}),
    });
    let sent = 0;
    const pump = () => {
      while (sent < FIFTY_MB && !res.destroyed) {
        sent += CHUNK.length;
        const ok = res.write(CHUNK, (err) => {
          if (!err) hose.written[index] = (hose.written[index] ?? 0) + CHUNK.length;
        });
        if (!ok) return void res.once('drain', pump);
      }
      if (!res.destroyed) res.end();
    };
    res.on('error', () => undefined);
    pump();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const addr = server.address();
  hose.url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  hose.close = () =>
    new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return hose;
}

let config: Config;
let ctx: RelayContext;
let api: FastifyInstance;
let worker: Awaited<ReturnType<typeof startTestWorker>>;
let chunked: Firehose;
let declared: Firehose;

beforeAll(async () => {
  chunked = await startFirehose({ declareLength: false });
  declared = await startFirehose({ declareLength: true });
  config = testConfig({ RESPONSE_MAX_BYTES: String(256 * 1024) });
  ctx = await testContext(config);
  worker = await startTestWorker(config);
  api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
});

afterAll(async () => {
  await api.close();
  await worker.stop();
  await ctx.close();
  await chunked.close();
  await declared.close();
  await removePrefixKeys(config);
});

async function resultOf(jobId: string) {
  return waitFor(async () => (await readResults(ctx)).find((r) => r.jobId === jobId), 20_000, `result of ${jobId}`);
}

describe('response bodies are read up to a limit and the rest discarded', () => {
  it('a 50 MB chunked answer to a delivery: delivered, and the sender stopped reading after its first KiB', async () => {
    await ctx.store.put({
      id: 'hose_status',
      name: 'hose',
      endpoint: { url: chunked.url, method: 'POST' },
      body: { a: 1 },
      retry: { maxAttempts: 1 },
    });
    const { jobId } = await ctx.producer.enqueue({ actionId: 'hose_status', params: {} });
    expect(await resultOf(jobId)).toMatchObject({ outcome: 'delivered', status: '200' });
    await waitFor(() => chunked.requests === 1, 5000, 'the request');
    // The socket was dropped after the first few KiB: what could still be written is what kernel buffers took.
    await new Promise((r) => setTimeout(r, 300));
    expect(chunked.written[0]).toBeLessThan(FIFTY_MB / 4);
  });

  it('a 50 MB answer declared by content-length to an action capturing fields: response_invalid, 4 KiB kept', async () => {
    await ctx.store.put({
      id: 'hose_capture',
      name: 'hose',
      endpoint: { url: declared.url, method: 'POST' },
      body: { a: 1 },
      response: { fields: { id: { type: 'string' } } },
      retry: { maxAttempts: 1 },
    });
    const { jobId } = await ctx.producer.enqueue({ actionId: 'hose_capture', params: {} });
    expect(await resultOf(jobId)).toMatchObject({ outcome: 'dead', reason: 'response_invalid', status: '200' });
    const record = await ctx.deadLetters.get(jobId);
    expect(record?.attempts[0]?.response?.body.length).toBeLessThanOrEqual(4096);
    expect(record?.attempts[0]?.error?.message).toMatch(/exceeds/);
    await new Promise((r) => setTimeout(r, 300));
    expect(declared.written[0]).toBeLessThan(FIFTY_MB / 4);
  });

  it('POST /v1/actions/:id/test answers with at most RESPONSE_MAX_BYTES of a 50 MB body, marked truncated', async () => {
    const before = chunked.requests;
    const res = await api.inject({ method: 'POST', url: '/v1/actions/hose_status/test', payload: {} });
    expect(res.statusCode).toBe(200);
    const answer = res.json() as { response: { body: string; truncated: boolean } };
    expect(answer.response.truncated).toBe(true);
    expect(Buffer.byteLength(answer.response.body)).toBeLessThanOrEqual(256 * 1024);
    await new Promise((r) => setTimeout(r, 300));
    expect(chunked.written[before]).toBeLessThan(FIFTY_MB / 4);
  });

  it('POST /v1/actions/:id/test shows a JSON answer nested too deep to answer as text, with a note, not a 500', async () => {
    const nested = (depth: number) => `${'['.repeat(depth)}${']'.repeat(depth)}`;
    // 200 KB, under RESPONSE_MAX_BYTES: read whole, so it is the nesting that matters, not a cut.
    const deep = nested(100_000);
    const third = await startReceiver();
    third.handler = (r, res) =>
      res.writeHead(200, { 'content-type': 'application/json' }).end(r.url === '/deep' ? deep : nested(MAX_JSON_DEPTH));
    try {
      for (const path of ['/deep', '/shallow']) {
        await ctx.store.put({ id: `nested${path.slice(1)}`, name: 'nested', endpoint: { url: third.url, path, method: 'POST' }, body: {} });
      }
      const res = await api.inject({ method: 'POST', url: '/v1/actions/nesteddeep/test', payload: {} });
      expect(res.statusCode).toBe(200);
      expect(res.json().response).toEqual({
        status: 200,
        headers: expect.any(Object),
        body: deep,
        truncated: false,
        note: `the JSON body is nested deeper than ${MAX_JSON_DEPTH} levels: shown as text`,
      });
      // As deep as a request body may be: parsed, as before.
      const shallow = await api.inject({ method: 'POST', url: '/v1/actions/nestedshallow/test', payload: {} });
      expect(shallow.statusCode).toBe(200);
      expect(shallow.json().response.body).toEqual(JSON.parse(nested(MAX_JSON_DEPTH)));
      expect(shallow.json().response.note).toBeUndefined();
    } finally {
      await third.close();
    }
  });
});

describe('a huge job or definition is refused with a clear error', () => {
  const small = {
    id: 'small',
    name: 'small',
    // Port 9 (discard): nothing here is ever sent.
    endpoint: { url: 'http://127.0.0.1:9', method: 'POST' },
    parameters: { note: { type: 'string' } },
    body: { note: '{{params.note}}' },
  };

  it('POST /v1/jobs and /v1/jobs/batch refuse params over JOB_MAX_BYTES, naming params', async () => {
    await ctx.store.put(small);
    const note = 'n'.repeat(300 * 1024);
    const one = await api.inject({ method: 'POST', url: '/v1/jobs', payload: { actionId: 'small', params: { note } } });
    expect(one.statusCode).toBe(400);
    expect(one.json().error.details).toEqual([{ path: 'params', message: expect.stringMatching(/at most 262144 \(JOB_MAX_BYTES\)/) }]);
    const batch = await api.inject({
      method: 'POST',
      url: '/v1/jobs/batch',
      payload: { jobs: [{ actionId: 'small', params: { note: 'ok' }, context: { big: note } }] },
    });
    expect(batch.json().results[0].error.details).toEqual([{ path: 'jobs[0].context', message: expect.stringContaining('JOB_MAX_BYTES') }]);
  });

  it('PUT /v1/actions/:id refuses a definition over 256 KiB, naming its largest field', async () => {
    const res = await api.inject({
      method: 'PUT',
      url: '/v1/actions/huge',
      payload: { ...small, id: 'huge', body: { note: '{{params.note}}', filler: 'f'.repeat(MAX_DEFINITION_BYTES) } },
    });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.details).toEqual([{ path: 'body', message: expect.stringContaining(`at most ${MAX_DEFINITION_BYTES} bytes`) }]);
    expect(await ctx.store.get('huge')).toBeNull();
  });

  it('a definition that holds itself or nests too deep for JSON is a validation error, by any route, not a TypeError', async () => {
    const body: Record<string, unknown> = { note: '{{params.note}}' };
    body.self = body;
    await expect(ctx.store.put({ ...small, id: 'loop', body })).rejects.toMatchObject({
      code: 'validation_failed',
      problems: [{ path: 'body.self', message: expect.stringContaining('refers back to one of its own parents') }],
    });
    expect(await ctx.store.get('loop')).toBeNull();
    let deep: unknown = 'x';
    for (let i = 0; i < 100_000; i++) deep = [deep];
    await expect(ctx.store.validate({ ...small, id: 'deep', body: deep })).rejects.toMatchObject({
      code: 'validation_failed',
      problems: [{ path: '', message: expect.stringContaining('cannot be written as JSON') }],
    });
  });

  it('enqueue refuses a param that would inject a header, naming it; so does a bad idempotency key', async () => {
    await ctx.store.put({
      id: 'hdr',
      name: 'hdr',
      endpoint: { url: 'http://127.0.0.1:9', method: 'POST', headers: { 'X-Note': '{{params.note}}' } },
      parameters: { note: { type: 'string' } },
    });
    const bad = await api.inject({ method: 'POST', url: '/v1/jobs', payload: { actionId: 'hdr', params: { note: 'a\r\nX-Evil: 1' } } });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.details).toEqual([{ path: 'params.note', message: expect.stringContaining('X-Note') }]);
    const key = await api.inject({ method: 'POST', url: '/v1/jobs', payload: { actionId: 'hdr', idempotencyKey: 'k\r\nX: 1' } });
    expect(key.statusCode).toBe(400);
    expect(key.json().error.details).toEqual([{ path: 'idempotencyKey', message: expect.stringContaining('Idempotency-Key') }]);
  });

  it('API bodies carrying __proto__ or constructor.prototype are refused before any handler sees them', async () => {
    const proto = await api.inject({
      method: 'POST',
      url: '/v1/jobs',
      headers: { 'content-type': 'application/json' },
      payload: '{"actionId": "hdr", "params": {"__proto__": {"polluted": true}}}',
    });
    expect(proto.statusCode).toBe(400);
    const ctor = await api.inject({
      method: 'PUT',
      url: '/v1/actions/ctor',
      headers: { 'content-type': 'application/json' },
      payload:
        '{"name": "c", "endpoint": {"url": "http://127.0.0.1:9", "method": "POST"}, "constructor": {"prototype": {"polluted": true}}}',
    });
    expect(ctor.statusCode).toBe(400);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('the CLI refuses the same: a job over JOB_MAX_BYTES and a definition over 256 KiB exit 2 naming the field', async () => {
    const env = {
      ...process.env,
      REDIS_URL: config.REDIS_URL,
      ACTION_RELAY_PREFIX: config.ACTION_RELAY_PREFIX,
      LOG_LEVEL: 'silent',
      EGRESS_ALLOW_HOSTS: '127.0.0.1',
      JOB_MAX_BYTES: '1024',
    };
    const cli = (...args: string[]) =>
      run(process.execPath, ['--import', 'tsx', 'workers/action-relay.ts', ...args], { env }).then(
        () => null,
        (err: { code: number; stderr: string }) => err,
      );
    const job = await cli('enqueue', 'small', '--params', JSON.stringify({ note: 'n'.repeat(2000) }));
    expect(job?.code).toBe(2);
    expect(job?.stderr).toMatch(/params: params and context are \d+ bytes serialized .*at most 1024 \(JOB_MAX_BYTES\)/);
    const dir = mkdtempSync(join(tmpdir(), 'ar-huge-'));
    writeFileSync(join(dir, 'huge.json'), JSON.stringify({ ...small, id: 'huge_cli', body: { filler: 'f'.repeat(MAX_DEFINITION_BYTES) } }));
    const def = await cli('actions', 'apply', dir);
    expect(def?.code).toBe(2);
    expect(def?.stderr).toMatch(/body: the definition is \d+ bytes/);
  });
});
