import { z } from 'zod';
import { scalarParamTypes } from './param-types.js';
import { RETRY_DEFAULTS } from '../delivery/retry-policy.js';
import { HEADER_NAME, HEADER_NAME_MAX, isHeaderName } from '../delivery/header-grammar.js';

/** A secret is a reference resolved by the worker at call time, never a stored value. */
export const secretRefSchema = z.union([
  z.strictObject({ env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name') }),
  z.strictObject({ file: z.string().min(1) }),
]);
export type SecretRef = z.infer<typeof secretRefSchema>;

/** True for a `{ env }` or `{ file }` object: a place where a secret's value goes. */
export function isSecretRef(value: unknown): value is SecretRef {
  return secretRefSchema.safeParse(value).success;
}

export { scalarParamTypes };

export interface ParamSpec {
  type: (typeof scalarParamTypes)[number] | 'listObject';
  required?: boolean | undefined;
  description?: string | undefined;
  fields?: Record<string, ParamSpec> | undefined;
}

const paramName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/, 'a name of letters, digits and _');

export const paramSpecSchema: z.ZodType<ParamSpec> = z.lazy(() =>
  z
    .strictObject({
      type: z.enum([...scalarParamTypes, 'listObject']),
      required: z.boolean().optional(),
      description: z.string().max(1000).optional(),
      fields: z.record(paramName, paramSpecSchema).optional(),
    })
    .superRefine((spec, ctx) => {
      if (spec.type === 'listObject' && !spec.fields) {
        ctx.addIssue({ code: 'custom', path: ['fields'], message: 'listObject needs fields' });
      }
      if (spec.type !== 'listObject' && spec.fields) {
        ctx.addIssue({ code: 'custom', path: ['fields'], message: 'only listObject has fields' });
      }
    }),
);

/** HTTP header field name (RFC 9110 token). */
const headerName = z
  .string()
  .min(1, 'not a valid header name')
  .max(HEADER_NAME_MAX, 'not a valid header name')
  .regex(HEADER_NAME, 'not a valid header name');
/** A header value may not carry CR, LF or other control characters. */
const headerValue = z
  .string()
  .max(8192)
  .regex(/^[^\u0000-\u0008\u000a-\u001f\u007f]*$/, 'control characters (CR, LF, ...) are not allowed');

const httpUrl = z
  .string()
  .max(2048)
  .superRefine((value, ctx) => {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      ctx.addIssue({ code: 'custom', message: 'not a valid URL' });
      return;
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      ctx.addIssue({ code: 'custom', message: 'only http and https URLs are allowed' });
    }
    if (url.username || url.password) {
      ctx.addIssue({ code: 'custom', message: 'credentials in the URL are not allowed; use auth' });
    }
    if (url.hash) ctx.addIssue({ code: 'custom', message: 'a URL fragment is not allowed' });
    if (value.includes('{{')) {
      ctx.addIssue({ code: 'custom', message: 'the URL is static; put placeholders in endpoint.path' });
    }
  });

const authSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('none') }),
  z.strictObject({
    type: z.literal('apiKey'),
    name: z.string().min(1).max(256),
    value: secretRefSchema,
    in: z.enum(['header', 'query']),
  }),
  z.strictObject({ type: z.literal('basic'), username: z.string().min(1).max(256), password: secretRefSchema }),
  z.strictObject({ type: z.literal('bearer'), token: secretRefSchema }),
  z.strictObject({
    type: z.literal('oauth2ClientCredentials'),
    tokenUrl: httpUrl,
    clientId: z.string().min(1),
    clientSecret: secretRefSchema,
    scope: z.string().max(2048).optional(),
    audience: z.string().max(2048).optional(),
    /**
     * How the client authenticates to the token endpoint (RFC 6749 section 2.3.1): HTTP Basic, or
     * client_id and client_secret in the form body. @defaultValue basic
     */
    clientAuth: z.enum(['basic', 'body']).default('basic'),
  }),
  z
    .strictObject({
      type: z.literal('customToken'),
      request: z
        .strictObject({
          url: httpUrl,
          method: z.enum(['GET', 'POST']),
          /** Literal values, or secret references resolved at call time. */
          headers: z.record(headerName, z.union([headerValue, secretRefSchema])).optional(),
          /** @defaultValue json */
          bodyType: z.enum(['json', 'form']).default('json'),
          /** A JSON document; any `{ env }` or `{ file }` object in it is replaced by the secret's value. */
          body: z.unknown().optional(),
        })
        .superRefine((req, ctx) => {
          if (req.method === 'GET' && req.body !== undefined) {
            ctx.addIssue({ code: 'custom', path: ['body'], message: 'a GET token request has no body' });
          }
          const body = req.body;
          if (req.bodyType === 'form' && body !== undefined) {
            const flat =
              typeof body === 'object' &&
              body !== null &&
              !Array.isArray(body) &&
              Object.values(body).every((v) => v === null || typeof v !== 'object' || isSecretRef(v));
            if (!flat) ctx.addIssue({ code: 'custom', path: ['body'], message: 'a form body is one object of scalar values' });
          }
        }),
      /** A dotted path into the JSON answer (`access_token`, `data.token`), or `$response` for the whole body. */
      tokenPath: z.string().min(1).max(256),
      /** A dotted path to the lifetime in seconds. */
      expiresInPath: z.string().min(1).max(256).optional(),
      /** How long a token is used when the answer gives no lifetime. @defaultValue 300000 */
      cacheTtlMs: z.number().int().positive().max(86_400_000).optional(),
      inject: z.strictObject({ as: z.enum(['bearer', 'header', 'query']), name: z.string().min(1).max(256).optional() }),
    })
    .superRefine((auth, ctx) => {
      if (auth.inject.as !== 'bearer' && !auth.inject.name) {
        ctx.addIssue({ code: 'custom', path: ['inject', 'name'], message: `inject as ${auth.inject.as} needs a name` });
      }
      if (auth.inject.as === 'header' && auth.inject.name && !isHeaderName(auth.inject.name)) {
        ctx.addIssue({ code: 'custom', path: ['inject', 'name'], message: 'not a valid header name' });
      }
    }),
]);
export type AuthConfig = z.infer<typeof authSchema>;

const retrySchema = z.strictObject({
  /** Total attempts, first one included. @defaultValue 4 */
  maxAttempts: z.number().int().min(1).max(50).default(RETRY_DEFAULTS.maxAttempts),
  backoff: z
    .strictObject({
      type: z.enum(['exponential', 'fixed']).default(RETRY_DEFAULTS.backoff.type),
      delayMs: z.number().int().min(0).max(86_400_000).default(RETRY_DEFAULTS.backoff.delayMs),
      maxDelayMs: z.number().int().min(0).max(86_400_000).default(RETRY_DEFAULTS.backoff.maxDelayMs),
    })
    .default(() => ({ ...RETRY_DEFAULTS.backoff })),
  retryOn: z.array(z.number().int().min(100).max(599)).default(() => [...RETRY_DEFAULTS.retryOn]),
});

const rateLimitSchema = z.strictObject({
  key: z.string().min(1).max(200).optional(),
  max: z.number().int().positive(),
  perMs: z.number().int().positive(),
  maxConcurrent: z.number().int().positive().optional(),
  maxWaitMs: z.number().int().positive().default(21_600_000),
});

const circuitBreakerSchema = z.strictObject({
  failureRatio: z.number().gt(0).max(1).default(0.5),
  minRequests: z.number().int().positive().default(20),
  windowMs: z.number().int().positive().default(30_000),
  openMs: z.number().int().positive().default(30_000),
});

const templateString = z.string().max(8192);

/** Fields picked from a JSON answer: each a type and a dotted path (the field's name by default). */
const capturedFieldsSchema = z.strictObject({
  fields: z.record(z.string().min(1).max(200), z.strictObject({ type: z.enum(scalarParamTypes), path: z.string().min(1).optional() })),
});

/** The action definition document (docs/actions.md). Unknown keys are errors. */
export const actionDefinitionSchema = z.strictObject({
  id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'letters, digits, _ and -, at most 64'),
  name: z.string().min(1).max(200),
  description: z.string().max(2000).optional(),
  endpoint: z.strictObject({
    url: httpUrl,
    path: templateString.optional(),
    method: z.enum(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']),
    query: z.record(z.string().min(1).max(256), templateString).optional(),
    headers: z.record(headerName, headerValue).optional(),
    /** @defaultValue 10000 */
    timeoutMs: z.number().int().min(1).max(120_000).default(10_000),
  }),
  auth: authSchema.default({ type: 'none' }),
  parameters: z.record(paramName, paramSpecSchema).default({}),
  body: z.unknown().optional(),
  allowNulls: z.boolean().default(false),
  /** Send the W3C `traceparent` header of the job's trace to the third party. @defaultValue true */
  propagateTrace: z.boolean().optional(),
  response: capturedFieldsSchema.optional(),
  /** Fields captured from a non-2xx JSON answer, for the journey's error branch; never fails the attempt. */
  errorResponse: capturedFieldsSchema.optional(),
  retry: retrySchema.default(() => ({
    maxAttempts: RETRY_DEFAULTS.maxAttempts,
    backoff: { ...RETRY_DEFAULTS.backoff },
    retryOn: [...RETRY_DEFAULTS.retryOn],
  })),
  rateLimit: rateLimitSchema.optional(),
  circuitBreaker: circuitBreakerSchema.optional(),
  signing: z.strictObject({ secrets: z.array(secretRefSchema).min(1).max(2) }).optional(),
  tls: z
    .strictObject({
      cert: secretRefSchema.optional(),
      key: secretRefSchema.optional(),
      ca: secretRefSchema.optional(),
    })
    .optional(),
});

/** The definition as written (defaults optional). */
export type ActionDefinitionInput = z.input<typeof actionDefinitionSchema>;
/** The definition after parsing, defaults filled in. */
export type ActionDefinition = z.infer<typeof actionDefinitionSchema>;
