import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiServer } from '../../src/api/api-server.js';
import { createHttpSender, type HttpSender } from '../../src/delivery/http-sender.js';
import { createEgressGuard } from '../../src/delivery/egress-guard.js';
import { createTokenProvider } from '../../src/delivery/token-provider.js';
import { AuthError, TimeoutError } from '../../src/errors/errors.js';
import { createLogger } from '../../src/logger.js';
import { readResults, removePrefixKeys, startTestWorker, testConfig, testContext, waitFor } from '../support/harness.js';
import type { Config } from '../../src/config/config.js';
import type { RelayContext } from '../../src/context/relay-context.js';

/*
 * A third party that answers, then sends one byte every 100 ms for a minute: undici's bodyTimeout
 * restarts with each byte, so without one deadline per request the exchange lasts the minute.
 * Each test bounds the exchange by timeoutMs and checks it ended as a timeout long before the
 * trickle would have (the bound leaves seconds of slack for a loaded machine; the trickle lasts 60 s).
 */
const TRICKLE_MS = 60_000;
const SLACK_MS = 5_000;
const timers = new Set<NodeJS.Timeout>();
const sockets = new Set<Socket>();

let bodyTrickle: Server;
let headerTrickle: TcpServer;
let fast: Server;
let sender: HttpSender;
const urlOf = (s: Server | TcpServer) => `http://127.0.0.1:${(s.address() as { port: number }).port}`;

function trickle(write: (chunk: string) => void, end: () => void): void {
  const started = Date.now();
  const t = setInterval(() => {
    if (Date.now() - started > TRICKLE_MS) {
      clearInterval(t);
      end();
    } else write('x');
  }, 100);
  timers.add(t);
}

beforeAll(async () => {
  bodyTrickle = createHttpServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write('{"a":"');
    trickle(
      (c) => res.write(c),
      () => res.end('"}'),
    );
  });
  // Status line, then the headers one byte at a time.
  headerTrickle = createTcpServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.once('data', () => {
      socket.write('HTTP/1.1 200 OK\r\nX-Slow: ');
      trickle(
        (c) => socket.write(c),
        () => socket.end('\r\ncontent-length: 0\r\n\r\n'),
      );
    });
  });
  fast = createHttpServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
  });
  await Promise.all([bodyTrickle, headerTrickle, fast].map((s) => new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))));
  sender = createHttpSender({ guard: createEgressGuard({ allowPrivate: false, allowHosts: ['127.0.0.1'] }) });
});

afterAll(async () => {
  for (const t of timers) clearInterval(t);
  for (const s of sockets) s.destroy();
  bodyTrickle.closeAllConnections();
  fast.closeAllConnections();
  await sender.close();
  await Promise.all([bodyTrickle, headerTrickle, fast].map((s) => new Promise((r) => s.close(r))));
});

const request = (origin: string) => ({ method: 'POST', origin, path: '/x', headers: { 'content-type': 'application/json' }, body: '{}' });

async function timed<T>(p: Promise<T>): Promise<{ err: unknown; ms: number }> {
  const started = Date.now();
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  return { err, ms: Date.now() - started };
}

describe('one deadline per request', () => {
  it('a body trickled a byte at a time ends as timeout within timeoutMs', async () => {
    const { err, ms } = await timed(sender.send(request(urlOf(bodyTrickle)), { timeoutMs: 700, readLimit: 64 * 1024 }));
    expect(err).toBeInstanceOf(TimeoutError);
    expect(err).toMatchObject({ reason: 'timeout', code: 'UND_ERR_BODY_TIMEOUT' });
    expect(ms).toBeGreaterThanOrEqual(650);
    expect(ms).toBeLessThan(700 + SLACK_MS);
  });

  it('so does a discarded body (readLimit 0) and headers trickled a byte at a time', async () => {
    for (const [url, readLimit, code] of [
      [urlOf(bodyTrickle), 0, 'UND_ERR_BODY_TIMEOUT'],
      [urlOf(headerTrickle), 1024, 'UND_ERR_HEADERS_TIMEOUT'],
    ] as const) {
      const { err, ms } = await timed(sender.send(request(url), { timeoutMs: 700, readLimit }));
      expect(err, url).toBeInstanceOf(TimeoutError);
      expect((err as TimeoutError).code, url).toBe(code);
      expect(ms).toBeLessThan(700 + SLACK_MS);
    }
  });

  it('an answer within the deadline is read whole, and the timer does not outlive it', async () => {
    const res = await sender.send(request(urlOf(fast)), { timeoutMs: 700, readLimit: 1024 });
    expect(res.body.toString()).toBe('{"ok":true}');
    // The deadline has passed since: a second request on the same pool is unaffected.
    await new Promise((r) => setTimeout(r, 800));
    expect((await sender.send(request(urlOf(fast)), { timeoutMs: 700, readLimit: 1024 })).status).toBe(200);
  });
});

describe('token endpoint, /test and the worker', () => {
  let config: Config;
  let ctx: RelayContext;

  beforeAll(async () => {
    config = testConfig();
    ctx = await testContext(config, { ACTION_SECRET_DEADLINE: 'deadline-client-secret' });
  });
  afterAll(async () => {
    await ctx.close();
    await removePrefixKeys(config);
  });

  it('a trickling token endpoint ends within the token deadline, as a retryable auth error', async () => {
    const tokens = createTokenProvider({
      redis: ctx.redis,
      keys: ctx.keys,
      sender,
      secrets: ctx.secrets,
      logger: createLogger('silent'),
      userAgent: 'test',
      timeoutMs: 700,
    });
    const auth = {
      type: 'oauth2ClientCredentials' as const,
      tokenUrl: `${urlOf(bodyTrickle)}/token`,
      clientId: 'c',
      clientSecret: { env: 'ACTION_SECRET_DEADLINE' },
      clientAuth: 'basic' as const,
    };
    const { err, ms } = await timed(tokens.get(auth, 'deadline'));
    expect(err).toBeInstanceOf(AuthError);
    expect((err as AuthError).retryable).toBe(true);
    expect((err as AuthError).message).toContain("the answer's body was not read whole within 700 ms");
    expect(ms).toBeLessThan(700 + SLACK_MS);
  });

  it('POST /v1/actions/:id/test answers 502 timeout within the action’s timeoutMs', async () => {
    const api = await createApiServer({ ctx, sender });
    try {
      await ctx.store.put({ id: 'slow', name: 's', endpoint: { url: urlOf(bodyTrickle), method: 'POST', timeoutMs: 700 }, body: {} });
      const started = Date.now();
      const res = await api.inject({ method: 'POST', url: '/v1/actions/slow/test', payload: {} });
      expect(res.statusCode).toBe(502);
      expect(res.json().error.code).toBe('timeout');
      expect(Date.now() - started).toBeLessThan(700 + SLACK_MS);
    } finally {
      await api.close();
    }
  });

  it('a delivery to a trickling server is dead-lettered as timeout', async () => {
    await ctx.store.put({
      id: 'slow_job',
      name: 's',
      endpoint: { url: urlOf(bodyTrickle), method: 'POST', timeoutMs: 700 },
      body: {},
      retry: { maxAttempts: 1 },
    });
    const worker = await startTestWorker(config);
    try {
      const { jobId } = await ctx.producer.enqueue({ actionId: 'slow_job', params: {} });
      const result = await waitFor(
        async () => (await readResults(ctx)).find((r) => r.jobId === jobId),
        700 + SLACK_MS + 5000,
        'the outcome',
      );
      expect(result).toMatchObject({ outcome: 'dead', reason: 'timeout' });
      expect(Number(result.durationMs)).toBeLessThan(700 + SLACK_MS);
    } finally {
      await worker.stop();
    }
  });
});
