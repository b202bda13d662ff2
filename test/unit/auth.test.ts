import { describe, expect, it } from 'vitest';
import type { AuthConfig } from '../../src/actions/action-schema.js';
import type { BuiltRequest } from '../../src/actions/compile-action.js';
import { applyAuth, maskHeaders, maskPath } from '../../src/delivery/auth.js';
import { createSecretResolver } from '../../src/delivery/secret-resolver.js';
import type { TokenProvider } from '../../src/delivery/token-provider.js';
import { AuthError } from '../../src/errors/errors.js';

/*
 * Credentials added to a built request, and masked in what is recorded. Expected headers, paths
 * and encodings are written out.
 */

const env = {
  ACTION_SECRET_KEY: 'key-value-123',
  ACTION_SECRET_ODD: 'a b/c+d&e=f',
  ACTION_SECRET_BROKEN: 'line-one\r\nline-two',
};

const request = (path = '/items'): BuiltRequest => ({
  method: 'POST',
  origin: 'http://127.0.0.1:8080',
  path,
  headers: { 'content-type': 'application/json' },
  body: '{}',
});

/** A token provider that hands out `token` and records what it was asked. */
function tokens(token: string): TokenProvider & { calls: unknown[][] } {
  const calls: unknown[][] = [];
  return {
    calls,
    get(auth, actionId, rejected) {
      calls.push([auth.type, actionId, rejected]);
      return Promise.resolve(token);
    },
  };
}

async function refusal(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AuthError);
  return (err as AuthError).message;
}

const apply = (auth: AuthConfig, req: BuiltRequest, extra: { mask?: boolean; tokens?: TokenProvider; rejectedToken?: string } = {}) => {
  const secrets = createSecretResolver({ env });
  return { secrets, applied: applyAuth(auth, req, { secrets, actionId: 'crm', ...extra }) };
};

const oauth: AuthConfig = {
  type: 'oauth2ClientCredentials',
  tokenUrl: 'http://127.0.0.1:8080/token',
  clientId: 'relay',
  clientSecret: { env: 'ACTION_SECRET_KEY' },
  clientAuth: 'basic',
};

function custom(inject: { as: 'bearer' | 'header' | 'query'; name?: string }): AuthConfig {
  return {
    type: 'customToken',
    request: { url: 'http://127.0.0.1:8080/token', method: 'POST', bodyType: 'json' },
    tokenPath: 'access_token',
    inject,
  };
}

describe('applyAuth', () => {
  it('none: the request is left as it was', async () => {
    const req = request();
    const { applied } = apply({ type: 'none' }, req);
    expect(await applied).toEqual({ secretHeaders: [], secretQuery: [] });
    expect(req).toEqual(request());
  });

  it('apiKey in a header: the lower-cased name carries the secret', async () => {
    const req = request();
    const { applied } = apply({ type: 'apiKey', name: 'X-Api-Key', in: 'header', value: { env: 'ACTION_SECRET_KEY' } }, req);
    expect(await applied).toEqual({ secretHeaders: ['x-api-key'], secretQuery: [] });
    expect(req.headers).toEqual({ 'content-type': 'application/json', 'x-api-key': 'key-value-123' });
    expect(req.path).toBe('/items');
  });

  it('apiKey in the query: name and value URL-encoded, "?" or "&" as the path needs, the encoded form masked too', async () => {
    const req = request();
    const { applied, secrets } = apply({ type: 'apiKey', name: 'api key', in: 'query', value: { env: 'ACTION_SECRET_ODD' } }, req);
    expect(await applied).toEqual({ secretHeaders: [], secretQuery: ['api key'] });
    expect(req.path).toBe('/items?api%20key=a%20b%2Fc%2Bd%26e%3Df');
    expect(req.headers).toEqual({ 'content-type': 'application/json' });
    // A third party echoing the URL sends the encoded form back.
    expect(secrets.redact('echo: a%20b%2Fc%2Bd%26e%3Df.')).toBe('echo: ***.');

    const withQuery = request('/items?page=2');
    await apply({ type: 'apiKey', name: 'key', in: 'query', value: { env: 'ACTION_SECRET_KEY' } }, withQuery).applied;
    expect(withQuery.path).toBe('/items?page=2&key=key-value-123');
  });

  it('basic: the base64 of user:password, which is masked as the password is', async () => {
    const req = request();
    const { applied, secrets } = apply({ type: 'basic', username: 'relay', password: { env: 'ACTION_SECRET_KEY' } }, req);
    expect(await applied).toEqual({ secretHeaders: ['authorization'], secretQuery: [] });
    // base64("relay:key-value-123")
    expect(req.headers.authorization).toBe('Basic cmVsYXk6a2V5LXZhbHVlLTEyMw==');
    expect(secrets.redact('got cmVsYXk6a2V5LXZhbHVlLTEyMw== back')).toBe('got *** back');
  });

  it('bearer: "Bearer <token>"', async () => {
    const req = request();
    const { applied } = apply({ type: 'bearer', token: { env: 'ACTION_SECRET_KEY' } }, req);
    expect(await applied).toEqual({ secretHeaders: ['authorization'], secretQuery: [] });
    expect(req.headers.authorization).toBe('Bearer key-value-123');
  });

  it('a secret a header cannot carry is an auth error naming the field; the query form takes any value', async () => {
    const broken = { env: 'ACTION_SECRET_BROKEN' };
    expect(await refusal(apply({ type: 'bearer', token: broken }, request()).applied)).toBe(
      "auth.token: the secret's value holds characters a header cannot carry",
    );
    expect(await refusal(apply({ type: 'apiKey', name: 'k', in: 'header', value: broken }, request()).applied)).toBe(
      "auth.value: the secret's value holds characters a header cannot carry",
    );
    const req = request();
    await apply({ type: 'apiKey', name: 'k', in: 'query', value: broken }, req).applied;
    expect(req.path).toBe('/items?k=line-one%0D%0Aline-two');
  });

  it('a secret that cannot be resolved is refused under the name of its field', async () => {
    const missing = { env: 'ACTION_SECRET_MISSING' };
    expect(await refusal(apply({ type: 'bearer', token: missing }, request()).applied)).toBe('secret auth.token is not available');
    expect(await refusal(apply({ type: 'apiKey', name: 'k', in: 'header', value: missing }, request()).applied)).toBe(
      'secret auth.value is not available',
    );
    expect(await refusal(apply({ type: 'basic', username: 'u', password: missing }, request()).applied)).toBe(
      'secret auth.password is not available',
    );
  });

  it('with mask, every secret shows as "***" and nothing is resolved (the references may not even exist)', async () => {
    const missing = { env: 'ACTION_SECRET_MISSING' };
    const header = request();
    await apply({ type: 'apiKey', name: 'X-Key', in: 'header', value: missing }, header, { mask: true }).applied;
    expect(header.headers['x-key']).toBe('***');
    const query = request();
    await apply({ type: 'apiKey', name: 'key', in: 'query', value: missing }, query, { mask: true }).applied;
    expect(query.path).toBe('/items?key=***');
    const basic = request();
    expect(await apply({ type: 'basic', username: 'u', password: missing }, basic, { mask: true }).applied).toEqual({
      secretHeaders: ['authorization'],
      secretQuery: [],
    });
    expect(basic.headers.authorization).toBe('Basic ***');
    const bearer = request();
    await apply({ type: 'bearer', token: missing }, bearer, { mask: true }).applied;
    expect(bearer.headers.authorization).toBe('Bearer ***');
  });

  it('oauth2: the provider is asked for this action, with the token a 401 refused; "Bearer <token>" is sent and returned', async () => {
    const provider = tokens('access-token-1');
    const req = request();
    const applied = await apply(oauth, req, { tokens: provider, rejectedToken: 'old-token' }).applied;
    expect(provider.calls).toEqual([['oauth2ClientCredentials', 'crm', 'old-token']]);
    expect(req.headers.authorization).toBe('Bearer access-token-1');
    expect(applied).toEqual({ secretHeaders: ['authorization'], secretQuery: [], token: 'access-token-1' });
  });

  it('token auth types without a provider are an auth error; with mask no provider is needed and no token returned', async () => {
    expect(await refusal(apply(oauth, request()).applied)).toBe('auth type oauth2ClientCredentials needs a token provider');
    expect(await refusal(apply(custom({ as: 'bearer' }), request()).applied)).toBe('auth type customToken needs a token provider');
    const req = request();
    const applied = await apply(oauth, req, { mask: true }).applied;
    expect(applied).toEqual({ secretHeaders: ['authorization'], secretQuery: [] });
    expect(req.headers.authorization).toBe('Bearer ***');
    const provider = tokens('unused-token');
    await apply(custom({ as: 'header', name: 'X-Token' }), request(), { mask: true, tokens: provider }).applied;
    expect(provider.calls).toEqual([]);
  });

  it('customToken injected as bearer, as a named header, or as a named query parameter', async () => {
    const bearer = request();
    expect(await apply(custom({ as: 'bearer' }), bearer, { tokens: tokens('tok/en+1=') }).applied).toEqual({
      secretHeaders: ['authorization'],
      secretQuery: [],
      token: 'tok/en+1=',
    });
    expect(bearer.headers.authorization).toBe('Bearer tok/en+1=');

    const header = request();
    expect(await apply(custom({ as: 'header', name: 'X-Token' }), header, { tokens: tokens('tok/en+1=') }).applied).toEqual({
      secretHeaders: ['x-token'],
      secretQuery: [],
      token: 'tok/en+1=',
    });
    expect(header.headers).toEqual({ 'content-type': 'application/json', 'x-token': 'tok/en+1=' });

    const query = request('/items?page=2');
    const run = apply(custom({ as: 'query', name: 'tkn' }), query, { tokens: tokens('tok/en+1=') });
    expect(await run.applied).toEqual({ secretHeaders: [], secretQuery: ['tkn'], token: 'tok/en+1=' });
    expect(query.path).toBe('/items?page=2&tkn=tok%2Fen%2B1%3D');
    expect(query.headers).toEqual({ 'content-type': 'application/json' });
    expect(run.secrets.redact('/items?tkn=tok%2Fen%2B1%3D')).toBe('/items?tkn=***');
  });

  it('customToken without a name: access_token in the query, authorization as the header', async () => {
    const query = request();
    expect((await apply(custom({ as: 'query' }), query, { tokens: tokens('token-value') }).applied).secretQuery).toEqual(['access_token']);
    expect(query.path).toBe('/items?access_token=token-value');
    const header = request();
    expect((await apply(custom({ as: 'header' }), header, { tokens: tokens('token-value') }).applied).secretHeaders).toEqual([
      'authorization',
    ]);
    expect(header.headers.authorization).toBe('token-value');
  });

  it('an access token a header cannot carry is an auth error; in the query it is encoded', async () => {
    const broken = tokens('tok\r\nen');
    expect(await refusal(apply(custom({ as: 'header', name: 'X-Token' }), request(), { tokens: broken }).applied)).toBe(
      "access token: the secret's value holds characters a header cannot carry",
    );
    expect(await refusal(apply(oauth, request(), { tokens: broken }).applied)).toBe(
      "access token: the secret's value holds characters a header cannot carry",
    );
    const req = request();
    await apply(custom({ as: 'query', name: 't' }), req, { tokens: broken }).applied;
    expect(req.path).toBe('/items?t=tok%0D%0Aen');
  });
});

describe('masking for records', () => {
  it('maskHeaders masks the credential headers and authorization always, and copies the rest', () => {
    const headers = { 'content-type': 'application/json', 'x-api-key': 'key-value-123', authorization: 'Basic abc', accept: '*/*' };
    expect(maskHeaders(headers, { secretHeaders: ['x-api-key'], secretQuery: [] })).toEqual({
      'content-type': 'application/json',
      'x-api-key': '***',
      authorization: '***',
      accept: '*/*',
    });
    expect(headers['x-api-key']).toBe('key-value-123');
    expect(maskHeaders({ 'x-token': 'token-value' }, { secretHeaders: [], secretQuery: [] })).toEqual({ 'x-token': 'token-value' });
  });

  it('maskPath masks the credential query parameters only, and leaves a path without them as it was', () => {
    const applied = { secretHeaders: [], secretQuery: ['key', 'absent'] };
    expect(maskPath('/items?page=2&key=a%20b%2Fc&sort=asc', applied)).toBe('/items?page=2&key=***&sort=asc');
    expect(maskPath('/items', applied)).toBe('/items');
    expect(maskPath('?key=abc', applied)).toBe('?key=***');
    expect(maskPath('/items?page=2', applied)).toBe('/items?page=2');
    // No credential parameter: the path is returned as written, not re-encoded.
    expect(maskPath('/items?q=a%20b&key=x', { secretHeaders: [], secretQuery: [] })).toBe('/items?q=a%20b&key=x');
  });
});
