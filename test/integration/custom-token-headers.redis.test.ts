import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config/config.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import { createEgressGuard } from '../../src/delivery/egress-guard.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import { createTokenProvider, type TokenAuth } from '../../src/delivery/token-provider.js';
import { AuthError } from '../../src/errors/errors.js';
import { createLogger } from '../../src/logger.js';
import { removePrefixKeys, startReceiver, testConfig, testContext, type Receiver } from '../support/harness.js';

/* The request headers of a customToken login, with secrets in them. Every key under this file's own prefix. */

const LOGIN_KEYS = {
  // "€" is outside Latin-1: no header can carry it.
  ACTION_SECRET_CTH_NON_LATIN1: 'login-key-€-3b7a',
  // A control character other than CR, LF or NUL.
  ACTION_SECRET_CTH_CONTROL: 'login-key-\u0001-9c4d',
};
const env = { ...process.env, ...LOGIN_KEYS };

let config: Config;
let ctx: RelayContext;
let tokenEp: Receiver;

beforeAll(async () => {
  config = testConfig({ ACTION_RELAY_PREFIX: `custom-token-headers-${process.pid}` });
  ctx = await testContext(config, env);
  tokenEp = await startReceiver();
  tokenEp.handler = (_r, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"token":"custom-token-1234"}');
});

afterAll(async () => {
  await ctx.close();
  await tokenEp.close();
  await removePrefixKeys(config);
});

describe('customToken request headers', () => {
  it.each(Object.keys(LOGIN_KEYS))(
    'a secret (%s) a header cannot carry is a non-retryable auth error naming its field, not a retried "did not answer"',
    async (name) => {
      const tokens = createTokenProvider({
        redis: ctx.redis,
        keys: ctx.keys,
        sender: createHttpSender({ guard: createEgressGuard({ allowPrivate: false, allowHosts: ['127.0.0.1'] }) }),
        secrets: ctx.secrets,
        logger: createLogger('silent'),
        userAgent: 'custom-token-headers-test',
      });
      const auth: TokenAuth = {
        type: 'customToken',
        request: { url: `${tokenEp.url}/login`, method: 'POST', bodyType: 'json', headers: { 'X-Login-Key': { env: name } } },
        tokenPath: 'token',
        inject: { as: 'bearer' },
      };
      const err = await tokens.get(auth, `cth_${name}`).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(AuthError);
      const e = err as AuthError;
      // As the delivery path holds its own headers: a broken secret, dead-lettered at once.
      expect({ message: e.message, retryable: e.retryable }).toEqual({
        message: "auth.request.headers.X-Login-Key: the secret's value holds characters a header cannot carry",
        retryable: false,
      });
      expect(tokenEp.requests).toHaveLength(0);
    },
  );
});
