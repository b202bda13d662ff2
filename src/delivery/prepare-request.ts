import type { BuiltRequest, CompiledAction } from '../actions/compile-action.js';
import type { RenderScope } from '../actions/template.js';
import { applyAuth, maskHeaders, maskPath, type AuthApplied } from './auth.js';
import { MASK, type SecretResolver } from './secret-resolver.js';
import type { TlsMaterial } from './http-sender.js';
import type { TokenProvider } from './token-provider.js';
import { decodeSigningSecret, signatureHeaders } from './webhook-signer.js';

export interface PreparedRequest {
  req: BuiltRequest;
  applied: AuthApplied;
  /** Client certificate, key and CA of an mTLS action, resolved. */
  tls?: TlsMaterial;
}

export interface PrepareOptions {
  secrets: SecretResolver;
  tokens?: TokenProvider;
  /** Secrets shown as "***", nothing resolved or fetched (preview). @defaultValue false */
  mask?: boolean;
  /** A token the endpoint refused with 401: use a newer one. */
  rejectedToken?: string;
  /** @defaultValue Date.now */
  now?: () => number;
}

/**
 * The request of an action that sends no credentials, no signature and no client certificate
 * (most actions): rendered with no promise. Undefined for any other action (see prepareRequest).
 */
export function prepareWithoutSecrets(action: CompiledAction, scope: RenderScope): PreparedRequest | undefined {
  const def = action.definition;
  if (def.auth.type !== 'none' || def.signing || def.tls) return undefined;
  return { req: action.buildRequest(scope), applied: { secretHeaders: [], secretQuery: [] } };
}

/** Renders an attempt's request, adds credentials and, for a signing action, its signature headers. */
export async function prepareRequest(action: CompiledAction, scope: RenderScope, opts: PrepareOptions): Promise<PreparedRequest> {
  const plain = prepareWithoutSecrets(action, scope);
  if (plain) return plain;
  const def = action.definition;
  const req = action.buildRequest(scope);
  // A signing or mTLS action without credentials: no call for them.
  const applied: AuthApplied =
    def.auth.type === 'none'
      ? { secretHeaders: [], secretQuery: [] }
      : await applyAuth(def.auth, req, {
          secrets: opts.secrets,
          tokens: opts.tokens,
          actionId: action.id,
          mask: opts.mask ?? false,
          ...(opts.rejectedToken !== undefined ? { rejectedToken: opts.rejectedToken } : {}),
        });
  if (def.signing) {
    const timestamp = Math.floor((opts.now ?? Date.now)() / 1000);
    const id = scope.job.idempotencyKey;
    if (opts.mask) {
      Object.assign(req.headers, { 'webhook-id': id, 'webhook-timestamp': String(timestamp), 'webhook-signature': `v1,${MASK}` });
    } else {
      const keys = await Promise.all(
        def.signing.secrets.map(async (ref, i) =>
          decodeSigningSecret(await opts.secrets.resolve(ref, `signing.secrets[${i}]`), `signing.secrets[${i}]`),
        ),
      );
      Object.assign(req.headers, signatureHeaders(keys, id, timestamp, req.body ?? ''));
    }
  }
  const prepared: PreparedRequest = { req, applied };
  if (def.tls && !opts.mask) {
    const { cert, key, ca } = def.tls;
    const [c, k, a] = await Promise.all(
      (['cert', 'key', 'ca'] as const).map((part) => {
        const ref = { cert, key, ca }[part];
        return ref ? opts.secrets.resolve(ref, `tls.${part}`) : undefined;
      }),
    );
    prepared.tls = { ...(c ? { cert: c } : {}), ...(k ? { key: k } : {}), ...(a ? { ca: a } : {}) };
  }
  return prepared;
}

/** The request as an answer or a record may show it: credentials masked. */
export function describeRequest(p: PreparedRequest, redact: (s: string) => string) {
  const body = p.req.body === undefined ? undefined : describeBody(p.req.body, redact);
  return {
    method: p.req.method,
    url: redact(p.req.origin + maskPath(p.req.path, p.applied)),
    headers: maskHeaders(p.req.headers, p.applied),
    ...(body !== undefined ? { body } : {}),
  };
}

/**
 * The body as JSON with every secret masked, value by value: masking the text first breaks it
 * where a secret is also an unquoted number (`{"day":***}`). A body that cannot be walked (not
 * JSON, or nested deeper than the stack) is shown as masked text.
 */
function describeBody(body: string, redact: (s: string) => string): unknown {
  try {
    return maskValues(JSON.parse(body) as unknown, redact);
  } catch {
    return redact(body);
  }
}

function maskValues(v: unknown, redact: (s: string) => string): unknown {
  if (typeof v === 'string') return redact(v);
  if (typeof v === 'number' || typeof v === 'boolean') {
    const text = String(v);
    const masked = redact(text);
    return masked === text ? v : masked;
  }
  if (Array.isArray(v)) return v.map((x) => maskValues(x, redact));
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [redact(k), maskValues(x, redact)]));
  return v;
}
