import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config/config.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import { createEgressGuard } from '../../src/delivery/egress-guard.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import { MAX_TOKEN_LIFETIME_MS, createTokenProvider, tokenId } from '../../src/delivery/token-provider.js';
import { createLogger } from '../../src/logger.js';
import { removePrefixKeys, testConfig, testContext } from '../support/harness.js';

/*
 * Some token endpoints answer a "never expires" lifetime (expires_in 2^63 - 1). Taken as it came,
 * it made the cache entry's PX out of range: Redis refused it, the token was never cached, and
 * every job of the action failed with an error naming no field.
 */

let config: Config;
let ctx: RelayContext;
let endpoint: Server;
let fetches = 0;

beforeAll(async () => {
  config = testConfig();
  ctx = await testContext(config, { ACTION_SECRET_FOREVER: 'forever-client-secret' });
  endpoint = createServer((_req, res) => {
    fetches++;
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"access_token":"tok-forever-1234","expires_in":9223372036854775807}');
  });
  await new Promise<void>((r) => endpoint.listen(0, '127.0.0.1', r));
});

afterAll(async () => {
  await new Promise((r) => endpoint.close(r));
  await ctx.close();
  await removePrefixKeys(config);
});

describe('a token endpoint that says its token never expires', () => {
  it('gets its token cached for at most a day, fetched once for many jobs', async () => {
    const tokens = createTokenProvider({
      redis: ctx.redis,
      keys: ctx.keys,
      sender: createHttpSender({ guard: createEgressGuard({ allowPrivate: false, allowHosts: ['127.0.0.1'] }) }),
      secrets: ctx.secrets,
      logger: createLogger('silent'),
      userAgent: 'test',
    });
    const auth = {
      type: 'oauth2ClientCredentials' as const,
      tokenUrl: `http://127.0.0.1:${(endpoint.address() as { port: number }).port}/token`,
      clientId: 'c',
      clientSecret: { env: 'ACTION_SECRET_FOREVER' },
      clientAuth: 'basic' as const,
    };
    for (let i = 0; i < 3; i++) expect(await tokens.get(auth, 'forever')).toBe('tok-forever-1234');
    expect(fetches).toBe(1);
    const ttl = await ctx.redis.pttl(ctx.keys.token(tokenId(auth)));
    expect(ttl).toBeGreaterThan(MAX_TOKEN_LIFETIME_MS - 120_000);
    expect(ttl).toBeLessThanOrEqual(MAX_TOKEN_LIFETIME_MS);
  });
});
