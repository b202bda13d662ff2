import type { FastifyInstance } from 'fastify';
import type { Config } from '../config/config.js';
import { createRelayContext, type RelayContext } from '../context/relay-context.js';
import { assertSafeBind, createApiServer } from '../api/api-server.js';
import { createHttpSender } from '../delivery/http-sender.js';

export interface RunningApi {
  ctx: RelayContext;
  app: FastifyInstance;
  url: string;
  stop(): Promise<void>;
}

/** Starts the HTTP API of `action-relay api`. */
export async function runApi(config: Config, ctx?: RelayContext): Promise<RunningApi> {
  assertSafeBind(config.HOST, config.ADMIN_TOKEN ?? config.API_TOKENS_FILE);
  const context = ctx ?? (await createRelayContext(config, { watchActions: true }));
  const sender = createHttpSender({ guard: context.egress });
  const app = await createApiServer({ ctx: context, sender });
  const url = await app.listen({ port: config.PORT, host: config.HOST });
  context.logger.info({ url }, 'api listening');
  return {
    ctx: context,
    app,
    url,
    async stop() {
      await app.close();
      await sender.close();
      if (!ctx) await context.close();
    },
  };
}
