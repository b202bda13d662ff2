import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import { brotliCompressSync, deflateRawSync, deflateSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileAction, parseActionDefinition } from '../../src/actions/compile-action.js';
import { classify } from '../../src/delivery/attempt/classify.js';
import { createEgressGuard, type LookupAddress } from '../../src/delivery/egress-guard.js';
import { createDefaultDispatcher, createHttpSender, type SentResponse } from '../../src/delivery/http-sender.js';
import { circuitFailure } from '../../src/delivery/retry-policy.js';
import { RelayError, ValidationError } from '../../src/errors/errors.js';

/*
 * Edges of sending a request and reading its answer: the deadline before a connection exists,
 * definitions the HTTP client could not send, the URL as written, compressed answers.
 * Traffic goes to servers of this file on 127.0.0.1 only; the one non-loopback name is resolved by
 * an injected lookup that never answers, so no packet leaves the machine.
 */

type Handler = (req: IncomingMessage, res: ServerResponse) => void;
let handler: Handler = (_req, res) => res.end('{}');
const received: string[] = [];
let server: Server;
let port = 0;
const sockets = new Set<Socket>();

beforeAll(async () => {
  server = createServer((req, res) => {
    received.push(req.url ?? '');
    handler(req, res);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as { port: number }).port;
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise<void>((r) => server.close(() => r()));
});

const loopbackGuard = () => createEgressGuard({ allowPrivate: false, allowHosts: ['127.0.0.1'] });
const scope = { params: {}, context: {}, job: { id: 'j1', attempt: 1, idempotencyKey: 'k1' } };

function definition(endpoint: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) {
  return {
    id: 'review_send',
    name: 'review send',
    endpoint: { url: `http://127.0.0.1:${port}`, method: 'POST', path: '/x', timeoutMs: 2000, ...endpoint },
    ...extra,
  };
}

function compiled(endpoint: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) {
  return compileAction(parseActionDefinition(definition(endpoint, extra)), { version: 1, userAgent: 'review' });
}

async function settle<T>(p: Promise<T>): Promise<{ value?: T; error?: unknown }> {
  return p.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
}

describe('deadline', () => {
  // docs/delivery.md: "timeoutMs is one deadline for the whole exchange (connect, headers and body) ...
  // a request still running at timeoutMs is aborted then, a sub-second timeoutMs included".
  it('holds while the host name is still being resolved', async () => {
    const guard = createEgressGuard({ allowPrivate: false, lookup: () => new Promise<LookupAddress[]>(() => undefined) });
    const dispatcher = createDefaultDispatcher(guard);
    const sender = createHttpSender({ guard, dispatcher });
    const action = compiled({ url: 'http://slow-dns.invalid' });
    const t0 = performance.now();
    const out = await settle(sender.send(action.buildRequest(scope), { timeoutMs: 300, readLimit: 4096 }));
    const took = performance.now() - t0;
    // close() would wait for the connection attempt (the connector's own 10 s): not this test's subject.
    await dispatcher.destroy();
    expect(out.error).toBeInstanceOf(RelayError);
    expect((out.error as RelayError).reason).toBe('timeout');
    expect(took).toBeLessThan(2000);
  });

  it('holds while a TLS handshake gets no answer', async () => {
    const silent: TcpServer = createTcpServer(() => undefined); // accepts, never speaks TLS
    const held = new Set<Socket>();
    silent.on('connection', (s) => held.add(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const silentPort = (silent.address() as { port: number }).port;
    const guard = loopbackGuard();
    const dispatcher = createDefaultDispatcher(guard);
    const sender = createHttpSender({ guard, dispatcher });
    const action = compiled({ url: `https://127.0.0.1:${silentPort}` });
    const t0 = performance.now();
    const out = await settle(sender.send(action.buildRequest(scope), { timeoutMs: 300, readLimit: 4096 }));
    const took = performance.now() - t0;
    await dispatcher.destroy();
    for (const s of held) s.destroy();
    await new Promise<void>((r) => silent.close(() => r()));
    expect((out.error as RelayError).reason).toBe('timeout');
    expect(took).toBeLessThan(2000);
  });
});

describe('request building', () => {
  it('a constant endpoint.path the sender cannot send is refused at save, not retried as a network fault', async () => {
    const def = definition({ path: '/orders list/{{params.id}}' }, { parameters: { id: { type: 'string' } } });
    let action;
    try {
      action = compileAction(parseActionDefinition(def), { version: 1, userAgent: 'review' });
    } catch (err) {
      // Refusing it when saved, naming the field, is a fine answer too.
      expect(err).toBeInstanceOf(ValidationError);
      expect((err as ValidationError).problems.map((p) => p.path)).toContain('endpoint.path');
      return;
    }
    handler = (_req, res) => res.end('{}');
    const sender = createHttpSender({ guard: loopbackGuard() });
    const out = await settle(sender.send(action.buildRequest({ ...scope, params: { id: '7' } }), { timeoutMs: 2000, readLimit: 4096 }));
    await sender.close();
    // Today: NetworkError UND_ERR_INVALID_ARG "invalid request path", retryable, and a failure for the host's circuit.
    expect(out.error).toBeUndefined();
    expect(out.value?.status).toBe(200);
  });

  it.each([
    ['Expect', '100-continue'],
    ['Keep-Alive', 'timeout=5'],
    ['Upgrade', 'h2c'],
  ])('a constant %s header the sender cannot send is refused at save, not retried as a network fault', async (name, value) => {
    let action;
    try {
      action = compiled({ headers: { [name]: value } });
    } catch (err) {
      expect(err).toBeInstanceOf(ValidationError);
      expect((err as ValidationError).problems.map((p) => p.path)).toContain(`endpoint.headers.${name}`);
      return;
    }
    handler = (_req, res) => res.end('{}');
    const sender = createHttpSender({ guard: loopbackGuard() });
    const out = await settle(sender.send(action.buildRequest(scope), { timeoutMs: 2000, readLimit: 4096 }));
    await sender.close();
    // Today: NetworkError UND_ERR_INVALID_ARG / UND_ERR_NOT_SUPPORTED, retryable, a failure for the circuit.
    expect(out.error).toBeUndefined();
  });

  it.each([
    ['TE', 'trailers'],
    ['Trailer', 'Expires'],
    ['Proxy-Connection', 'keep-alive'],
  ])('accepts and sends a constant %s header, which the HTTP client sends as given', async (name, value) => {
    let seen: string | string[] | undefined;
    handler = (req, res) => {
      seen = req.headers[name.toLowerCase()];
      res.end('{}');
    };
    const sender = createHttpSender({ guard: loopbackGuard() });
    const res = await sender.send(compiled({ headers: { [name]: value } }).buildRequest(scope), { timeoutMs: 2000, readLimit: 4096 });
    await sender.close();
    expect(res.status).toBe(200);
    expect(seen).toBe(value);
  });

  it('keeps the trailing slash of endpoint.url when the action has no endpoint.path', async () => {
    handler = (_req, res) => res.end('{}');
    const action = compileAction(
      parseActionDefinition({ id: 'slash', name: 'slash', endpoint: { url: `http://127.0.0.1:${port}/api/notify/`, method: 'POST' } }),
      { version: 1, userAgent: 'review' },
    );
    expect(action.buildRequest(scope).path).toBe('/api/notify/');
  });
  it('sends the query of endpoint.url as written when the action adds none', () => {
    const action = compileAction(
      parseActionDefinition({ id: 'q', name: 'q', endpoint: { url: `http://127.0.0.1:${port}/bucket/key?uploads`, method: 'POST' } }),
      { version: 1, userAgent: 'review' },
    );
    // Today: "/bucket/key?uploads=" (and "a%20b" becomes "a+b"): URLSearchParams rewrites the author's URL.
    expect(action.buildRequest(scope).path).toBe('/bucket/key?uploads');
  });
});

describe('reading the answer', () => {
  // RFC 9110 12.5.3: a request without Accept-Encoding accepts any content coding. The relay sends
  // none (and lets a definition add "Accept-Encoding: gzip"), so a server may compress its answer.
  it('captures response fields of a gzip-encoded JSON answer', async () => {
    handler = (req, res) => {
      const accept = req.headers['accept-encoding'];
      const compress = accept === undefined || /gzip/.test(accept);
      res.writeHead(200, { 'content-type': 'application/json', ...(compress ? { 'content-encoding': 'gzip' } : {}) });
      res.end(compress ? gzipSync('{"id":"msg-1"}') : '{"id":"msg-1"}');
    };
    const action = compiled({}, { response: { fields: { id: { type: 'string' } } } });
    const sender = createHttpSender({ guard: loopbackGuard() });
    const res: SentResponse = await sender.send(action.buildRequest(scope), { timeoutMs: 2000, readLimit: 1 << 20 });
    await sender.close();
    // Today: ResponseInvalidError "response body is not valid JSON": a delivered message dead-lettered as response_invalid.
    expect(classify(action, res, Date.now(), 1 << 20)).toEqual({ id: 'msg-1' });
  });

  it.each([
    ['deflate (zlib)', 'deflate', (b: Buffer) => deflateSync(b)],
    ['deflate (raw)', 'deflate', (b: Buffer) => deflateRawSync(b)],
    ['br', 'br', (b: Buffer) => brotliCompressSync(b)],
  ])('decodes a %s answer too', async (_label, coding, encode) => {
    handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': coding });
      res.end(encode(Buffer.from('{"id":"msg-2"}')));
    };
    const action = compiled({ headers: { 'Accept-Encoding': coding } }, { response: { fields: { id: { type: 'string' } } } });
    const sender = createHttpSender({ guard: loopbackGuard() });
    const res = await sender.send(action.buildRequest(scope), { timeoutMs: 2000, readLimit: 1 << 20 });
    await sender.close();
    expect(classify(action, res, Date.now(), 1 << 20)).toEqual({ id: 'msg-2' });
  });

  it('counts the limit on the decoded body: a small answer that decodes past it is cut', async () => {
    handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' });
      res.end(gzipSync(JSON.stringify({ id: 'x', pad: ' '.repeat(200_000) })));
    };
    const action = compiled({}, { response: { fields: { id: { type: 'string' } } } });
    const sender = createHttpSender({ guard: loopbackGuard() });
    const res = await sender.send(action.buildRequest(scope), { timeoutMs: 2000, readLimit: 64 * 1024 });
    await sender.close();
    expect(res.body.length).toBeLessThan(64 * 1024);
    expect(res.truncated).toBe(true);
    expect(() => classify(action, res, Date.now(), 64 * 1024)).toThrow(/exceeds 65536 bytes/);
  });
});

describe('a request the HTTP client refuses to send', () => {
  it('is an invalid_params error, not retried and not a failure of the host', async () => {
    const sender = createHttpSender({ guard: loopbackGuard() });
    const req = compiled().buildRequest(scope);
    const out = await settle(sender.send({ ...req, headers: { ...req.headers, upgrade: 'h2c' } }, { timeoutMs: 2000, readLimit: 4096 }));
    await sender.close();
    expect(out.error).toBeInstanceOf(RelayError);
    expect((out.error as RelayError).reason).toBe('invalid_params');
    expect((out.error as RelayError).retryable).toBe(false);
    expect(circuitFailure(undefined, out.error)).toBeUndefined();
  });
});

describe('reading the fields of an answer', () => {
  const answer = (body: string | Buffer): SentResponse => ({ status: 200, headers: {}, body: Buffer.from(body), truncated: false });
  const action = () => compiled({}, { response: { fields: { id: { type: 'string' }, count: { type: 'integer' } } } });

  it('ignores a byte order mark before the JSON', () => {
    expect(classify(action(), answer('\uFEFF{"id":"m-1","count":2}'), Date.now(), 4096)).toEqual({ id: 'm-1', count: 2 });
  });

  it('leaves out a field set to null, as one left out: the message was delivered', () => {
    expect(classify(action(), answer('{"id":"m-1","count":null}'), Date.now(), 4096)).toEqual({ id: 'm-1' });
    expect(() => classify(action(), answer('{"id":"m-1","count":"two"}'), Date.now(), 4096)).toThrow(/response field "count"/);
  });
});
