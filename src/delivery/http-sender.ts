import { createHash } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import { brotliDecompressSync, gunzipSync, inflateRawSync, inflateSync, type ZlibOptions } from 'node:zlib';
import { Agent, type Dispatcher } from 'undici';
import type { BuiltRequest } from '../actions/compile-action.js';
import { classifyTransportError } from './retry-policy.js';
import { AuthError, TimeoutError } from '../errors/errors.js';
import { createEgressGuard, type EgressGuard } from './egress-guard.js';
import { createDeadlines, type Deadline } from './deadlines.js';

export interface SentResponse {
  status: number;
  headers: Record<string, string | string[]>;
  /** What was read of the body: all of it up to the limit. */
  body: Buffer;
  /** True when the body was longer than what was read. */
  truncated: boolean;
}

export interface SendOptions {
  /** Deadline of the whole exchange: connect, request, headers and the body read. */
  timeoutMs: number;
  /** Bytes of body to keep; 0 discards it. */
  readLimit: number;
  /** Client certificate and private CA of an mTLS action: sent through a pool of its own. */
  tls?: TlsMaterial;
}

/** PEM texts, resolved from an action's `tls` secret references. */
export interface TlsMaterial {
  cert?: string;
  key?: string;
  ca?: string;
}

export interface HttpSender {
  /** Sends one request; transport failures are thrown as TimeoutError or NetworkError. */
  send(req: BuiltRequest, opts: SendOptions): Promise<SentResponse>;
  close(): Promise<void>;
}

/**
 * Keep-alive pools per origin, shared by every job of the process. Every connection goes through
 * the egress guard's connector: the address connected to is the address checked.
 */
export function createDefaultDispatcher(guard: EgressGuard): Dispatcher {
  return new Agent({
    connections: 256,
    keepAliveTimeout: 30_000,
    connect: guard.connector({}, { timeoutMs: 10_000 }),
  });
}

async function readBounded(body: Dispatcher.ResponseData['body'], limit: number): Promise<{ buf: Buffer; truncated: boolean }> {
  if (limit <= 0) {
    await body.dump({ limit: 64 * 1024 }).catch(() => undefined);
    return { buf: Buffer.alloc(0), truncated: false };
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    if (size + chunk.length > limit) {
      chunks.push(chunk.subarray(0, limit - size));
      size = limit;
      body.destroy();
      return { buf: Buffer.concat(chunks, size), truncated: true };
    }
    chunks.push(chunk);
    size += chunk.length;
  }
  return { buf: chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size), truncated: false };
}

/**
 * undici's request in its callback form, as its promise form is built, so that the deadline can end
 * the wait too: undici acts on the abort only once the request has a connection, and a request
 * still connecting (DNS, TCP, TLS) or queued for a socket would otherwise wait for the connector's
 * own timeout. undici aborts that request when it gets its connection.
 */
function requestWithin(via: Dispatcher, options: Dispatcher.RequestOptions, deadline: Deadline): Promise<Dispatcher.ResponseData> {
  return new Promise((resolve, reject) => {
    deadline.onTimeUp = reject;
    via.request(options, (err, data) => {
      if (err) reject(err);
      else if (deadline.aborted) {
        data.body.destroy();
        reject(new Error('the deadline passed'));
      } else resolve(data);
    });
  });
}

const DECODERS: Record<string, (buf: Buffer, opts: ZlibOptions) => Buffer> = {
  gzip: gunzipSync,
  'x-gzip': gunzipSync,
  br: brotliDecompressSync,
  // "deflate" is the zlib format, though some servers send it raw.
  deflate: (buf, opts) => {
    try {
      return inflateSync(buf, opts);
    } catch (err: unknown) {
      if ((err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') throw err;
      return inflateRawSync(buf, opts);
    }
  },
};

/**
 * The body as its content coding decodes it, up to `limit` decoded bytes: an action may ask for a
 * compressed answer (Accept-Encoding), and its fields are in the decoded body. A body read only in
 * part, or decoding to more than the limit, is left as read and marked cut; one that does not
 * decode (or an unknown coding) is left as read.
 */
function decodeBody(
  read: { buf: Buffer; truncated: boolean },
  coding: string | string[],
  limit: number,
): { buf: Buffer; truncated: boolean } {
  const decode = typeof coding === 'string' ? DECODERS[coding.trim().toLowerCase()] : undefined;
  if (!decode || read.truncated) return read;
  try {
    return { buf: decode(read.buf, { maxOutputLength: Math.max(1, limit) }), truncated: false };
  } catch (err: unknown) {
    return (err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE' ? { buf: read.buf, truncated: true } : read;
  }
}

/** A keep-alive pool that presents a client certificate and trusts the given CA, behind the egress guard. */
export function createTlsDispatcher(tls: TlsMaterial, guard: EgressGuard): Dispatcher {
  return new Agent({
    connections: 64,
    keepAliveTimeout: 30_000,
    connect: guard.connector(tls, { timeoutMs: 10_000 }),
  });
}

export interface HttpSenderOptions {
  /**
   * The egress policy of every connection: deliveries, token requests and mTLS pools.
   * @defaultValue public addresses only (no allow list, no private addresses)
   */
  guard?: EgressGuard;
  /** The pool of requests without TLS material. @defaultValue createDefaultDispatcher(guard) */
  dispatcher?: Dispatcher;
  /** Builds the pool of one set of TLS material. @defaultValue createTlsDispatcher(tls, guard) */
  tlsDispatcher?: (tls: TlsMaterial) => Dispatcher;
}

/** The error of a request its deadline cut, named as undici names its own timeout of that phase. */
function deadlineError(answered: boolean, timeoutMs: number): TimeoutError {
  return answered
    ? new TimeoutError('UND_ERR_BODY_TIMEOUT', `the answer's body was not read whole within ${timeoutMs} ms (timeoutMs)`)
    : new TimeoutError('UND_ERR_HEADERS_TIMEOUT', `no answer within ${timeoutMs} ms (timeoutMs)`);
}

/**
 * Refuses TLS material that cannot be used, naming the part: not PEM, a key that does not open, a
 * certificate that is not the key's. Without this the TLS layer throws at connect time, which
 * reads as a network fault of the third party: retried, and counted by its circuit.
 */
function checkTlsMaterial(tls: TlsMaterial): void {
  const parts = (['cert', 'key', 'ca'] as const).filter((part) => tls[part] !== undefined);
  for (const part of parts) {
    try {
      createSecureContext({ [part]: tls[part] });
    } catch (err: unknown) {
      throw new AuthError(`tls.${part} cannot be used: ${(err as Error).message}`);
    }
  }
  if (tls.cert !== undefined && tls.key !== undefined) {
    try {
      createSecureContext({ cert: tls.cert, key: tls.key });
    } catch (err: unknown) {
      throw new AuthError(`tls.cert and tls.key do not go together: ${(err as Error).message}`);
    }
  }
}

/** Pools per distinct TLS material kept at once; the least recently used is closed beyond it. */
const MAX_TLS_POOLS = 64;

/** Sends requests with undici; redirects are not followed (a 3xx is an answer like any other). */
export function createHttpSender(senderOpts: HttpSenderOptions = {}): HttpSender {
  const guard = senderOpts.guard ?? createEgressGuard({ allowPrivate: false });
  const dispatcher = senderOpts.dispatcher ?? createDefaultDispatcher(guard);
  const makeTls = senderOpts.tlsDispatcher ?? ((tls: TlsMaterial) => createTlsDispatcher(tls, guard));
  const tlsPools = new Map<string, Dispatcher>();
  const deadlines = createDeadlines();
  const poolFor = (tls: TlsMaterial): Dispatcher => {
    const id = createHash('sha256')
      .update(JSON.stringify([tls.cert ?? '', tls.key ?? '', tls.ca ?? '']))
      .digest('hex');
    let pool = tlsPools.get(id);
    if (pool) {
      tlsPools.delete(id);
    } else {
      checkTlsMaterial(tls); // once per material: a pool is made only for material that works
      pool = makeTls(tls);
      if (tlsPools.size >= MAX_TLS_POOLS) {
        const [oldest, old] = tlsPools.entries().next().value as [string, Dispatcher];
        tlsPools.delete(oldest);
        void old.close().catch(() => undefined);
      }
    }
    tlsPools.set(id, pool);
    return pool;
  };
  return {
    async send(req, opts) {
      // One deadline for the whole exchange. undici's headersTimeout and bodyTimeout are per phase,
      // and bodyTimeout restarts with every chunk: a server trickling a byte every few hundred ms
      // would hold the request for hours. The abort ends connect, headers or body read alike.
      const deadline = deadlines.start(opts.timeoutMs);
      let answered = false;
      try {
        const via = opts.tls ? poolFor(opts.tls) : dispatcher;
        const options = {
          origin: req.origin,
          path: req.path,
          method: req.method as Dispatcher.HttpMethod,
          headers: req.headers,
          body: req.body ?? null,
          headersTimeout: opts.timeoutMs,
          bodyTimeout: opts.timeoutMs,
          signal: deadline,
        } as Dispatcher.RequestOptions;
        const res = await requestWithin(via, options, deadline);
        answered = true;
        const declared = Number(res.headers['content-length']);
        let read: { buf: Buffer; truncated: boolean };
        if (opts.readLimit > 0 && Number.isFinite(declared) && declared > opts.readLimit * 4) {
          // Do not pull megabytes we will throw away; keep the head for the record.
          const head = await readBounded(res.body, Math.min(opts.readLimit, 4096));
          read = { buf: head.buf, truncated: true };
        } else if (opts.readLimit > 0 && Number.isFinite(declared) && declared <= opts.readLimit) {
          // The length is the message's framing: no more than it can arrive. Read whole, without
          // the async iterator (a stream iterator per response was a tenth of the sender's cost).
          const bytes = await res.body.bytes();
          read = { buf: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), truncated: false };
        } else {
          read = await readBounded(res.body, opts.readLimit);
        }
        // A discarded body swallows the abort: the deadline still decides.
        if (deadline.aborted) throw deadlineError(answered, opts.timeoutMs);
        const headers = res.headers as SentResponse['headers'];
        const coding = headers['content-encoding'];
        if (coding !== undefined && read.buf.length > 0) read = decodeBody(read, coding, opts.readLimit);
        return { status: res.statusCode, headers, body: read.buf, truncated: read.truncated };
      } catch (err: unknown) {
        if (deadline.aborted) throw deadlineError(answered, opts.timeoutMs);
        throw classifyTransportError(err);
      } finally {
        deadlines.end(deadline, opts.timeoutMs);
      }
    },
    close: async () => {
      await Promise.all([dispatcher, ...tlsPools.values()].map((d) => d.close()));
    },
  };
}
