import { resolve } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config/config.js';
import { createRelayContext, type RelayContext } from '../context/relay-context.js';
import { assertSafeBind, createApiServer } from '../api/api-server.js';
import { createHttpSender } from '../delivery/http-sender.js';
import { applyActionsDir, type ActionsDirReport } from '../actions/action-files.js';
import { ValidationError, coerceError } from '../errors/errors.js';
import { withDeadline } from './shutdown.js';
import { checkEvictionPolicy } from '../redis/eviction-policy.js';
import { whenReady } from '../redis/redis-health.js';

export interface RunningApi {
  ctx: RelayContext;
  app: FastifyInstance;
  url: string;
  /**
   * ACTIONS_DIR applied at start, once Redis answers (null without ACTIONS_DIR). Rejects with a
   * ValidationError naming the file and fields when a file is refused: the process stops.
   */
  actionsApplied: Promise<ActionsDirReport | null>;
  /** Applies ACTIONS_DIR again (what SIGHUP does); refused files are logged, the others applied. */
  reloadActions(): Promise<ActionsDirReport | null>;
  stop(): Promise<void>;
}

/** Margin past SHUTDOWN_GRACE_MS for closing connections before giving up on them. */
const CLOSE_MARGIN_MS = 3000;

/** Errors no Redis state explains: a bug, not a reason to wait and retry. */
const isOwnFault = (err: unknown) =>
  err instanceof TypeError || err instanceof RangeError || err instanceof SyntaxError || err instanceof ReferenceError;

/**
 * Starts the HTTP API of `action-relay api`. The listener opens first, Redis or not (`/readyz`
 * says whether Redis answers); ACTIONS_DIR is applied once Redis answers, and again on SIGHUP.
 */
export async function runApi(config: Config, ctx?: RelayContext): Promise<RunningApi> {
  assertSafeBind(config.HOST, config.ADMIN_TOKEN ?? config.API_TOKENS_FILE);
  // Resolved once, against the folder the process started in: a later chdir changes nothing.
  const actionsDir = config.ACTIONS_DIR ? resolve(config.ACTIONS_DIR) : undefined;
  const context = ctx ?? (await createRelayContext(config, { watchActions: true, waitForRedis: false, serviceName: 'action-relay-api' }));
  const { logger } = context;
  // Refuses to run on a Redis that evicts keys: checked once Redis answers (the listener is up
  // meanwhile, so /readyz can say why); a refusal stops the process like a refused ACTIONS_DIR file.
  const setupChecked = whenReady(context.redis).then(() => checkEvictionPolicy(context.redis, logger));
  const sender = createHttpSender({ guard: context.egress });
  const app = await createApiServer({ ctx: context, sender });
  const url = await app.listen({ port: config.PORT, host: config.HOST });
  logger.info({ url }, 'api listening');

  const apply = async (): Promise<ActionsDirReport | null> => {
    if (!actionsDir) return null;
    for (;;) {
      await whenReady(context.redis);
      try {
        const report = await applyActionsDir(context.store, actionsDir);
        for (const a of report.applied)
          logger.info({ actionId: a.id, version: a.version, file: a.file }, 'action applied from ACTIONS_DIR');
        if (report.unchanged.length > 0) logger.info({ actionIds: report.unchanged }, 'actions of ACTIONS_DIR unchanged');
        for (const id of report.released) logger.info({ actionId: id }, 'action no longer in ACTIONS_DIR: editable through the API again');
        for (const r of report.refused) {
          logger.error({ file: r.file, problems: r.error.problems }, 'action file refused: the stored action is unchanged');
        }
        return report;
      } catch (err: unknown) {
        // A folder that cannot be read is a configuration error, and a TypeError or the like a fault
        // of ours: neither is a wait for Redis, and retrying would hide it behind a Redis warning.
        if ((err as NodeJS.ErrnoException).syscall !== undefined || isOwnFault(err)) throw err;
        // Redis lost half way: apply again once it is back (saving an unchanged file makes no version).
        logger.warn({ err: coerceError(err).message, dir: actionsDir }, 'ACTIONS_DIR not applied yet, retrying when Redis answers');
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  };
  const actionsApplied = setupChecked.then(apply).then((report) => {
    // At start a refused file stops the process, as a bad environment variable does.
    const refused = report?.refused[0];
    if (refused) throw new ValidationError(`${refused.file}: invalid action definition`, refused.error.problems);
    return report;
  });
  // Handled by whoever awaits it; never an unhandled rejection.
  actionsApplied.catch(() => undefined);

  const onHangup = () => {
    logger.info({ dir: actionsDir ?? null }, 'SIGHUP: applying ACTIONS_DIR again');
    // The api keeps serving with the actions it has: the failure is logged, never an unhandled rejection.
    apply().catch((err: unknown) => logger.error({ err: coerceError(err).message, dir: actionsDir }, 'SIGHUP: ACTIONS_DIR not applied'));
  };
  process.on('SIGHUP', onHangup);

  return {
    ctx: context,
    app,
    url,
    actionsApplied,
    reloadActions: apply,
    async stop() {
      process.off('SIGHUP', onHangup);
      const started = Date.now();
      // Requests in flight get the grace period; the listener stops taking new ones at once.
      const drained = await withDeadline(app.close(), config.SHUTDOWN_GRACE_MS);
      if (!drained) app.server.closeAllConnections();
      const closed = await withDeadline(
        (async () => {
          await sender.close();
          if (!ctx) await context.close();
        })(),
        CLOSE_MARGIN_MS,
      );
      if (!closed && !ctx) context.disconnect();
      logger.info(
        {
          event: 'stopped',
          durationMs: Date.now() - started,
          graceMs: config.SHUTDOWN_GRACE_MS,
          requestsCut: !drained,
          redis: context.redis.status,
        },
        drained ? 'api stopped' : 'api stopped: requests still in flight after the grace period were cut',
      );
    },
  };
}
