import { Command, CommanderError, InvalidArgumentError } from 'commander';
import pino from 'pino';
import { loadConfig, type Config } from '../config/config.js';
import { createRelayContext, type RelayContext } from '../context/relay-context.js';
import { readActionFiles } from '../actions/action-files.js';
import { ManagedByFilesError, ValidationError, coerceError } from '../errors/errors.js';
import { getStats, type QueueCounts } from '../queue/stats.js';
import { tuneV8ForDelivery } from './v8-tuning.js';
import { createLogger } from '../logger.js';
import { VERSION } from '../version.js';
import { registerDlqCommands } from './dlq-commands.js';
import { CliUsageError, printTable, type CliIo } from './cli-io.js';
import { hasRelayData, requireRedis } from './relay-data.js';

export type { CliIo };

const defaultIo: CliIo = {
  out: (l) => process.stdout.write(`${l}\n`),
  err: (l) => process.stderr.write(`${l}\n`),
  errRaw: (t) => process.stderr.write(t),
  env: process.env,
  stderrIsTty: process.stderr.isTTY === true,
};

/**
 * A reader that went away (`action-relay dlq list | head`) ends the output, not the process with a
 * stack trace: the command stops quietly with status 0.
 */
export function endQuietlyOnEpipe(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(0);
      throw err;
    });
  }
}

function jsonOption(name: string) {
  return (value: string): Record<string, unknown> => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(value);
    } catch {
      throw new InvalidArgumentError(`${name} is not valid JSON`);
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed))
      throw new InvalidArgumentError(`${name} must be a JSON object`);
    return parsed as Record<string, unknown>;
  };
}

export function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

function shareOption(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0 || n > 1) throw new InvalidArgumentError('expected a number from 0 to 1');
  return n;
}

/** Waits on a process-long command until SIGINT / SIGTERM, then stops it gracefully. */
async function untilSignal(stop: () => Promise<void>, io: CliIo): Promise<void> {
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  io.err('stopping: finishing in-flight work...');
  await stop();
}

/**
 * The CLI. Each long-running command (worker, api, demo, receiver) imports its own modules when it
 * runs, so that a worker process holds neither the HTTP API nor the console and the demo: about
 * 7 MB less live heap for every major collection to mark.
 */
export function buildCli(io: CliIo = defaultIo): Command {
  const program = new Command('action-relay')
    .description('Deliver custom actions of a journey engine to third-party HTTP APIs')
    .version(VERSION)
    .showHelpAfterError()
    // Usage errors reach main (exit code 2) instead of exiting inside commander.
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) });

  const config = (): Config => loadConfig(io.env);
  /** Runs a short command with a context that is closed afterwards. */
  const withContext = async (fn: (ctx: RelayContext) => Promise<void>) => {
    const cfg = config();
    await requireRedis(cfg);
    const ctx = await createRelayContext(cfg, {
      // On stderr: stdout is the command's answer (JSON with --json), never log lines.
      logger: createLogger('warn', pino.destination({ dest: 2, sync: true })),
      processMetrics: false,
      env: io.env,
      serviceName: 'action-relay-cli',
    });
    try {
      await fn(ctx);
    } finally {
      await ctx.close();
    }
  };
  /**
   * Runs a read command; under a prefix that holds no action-relay data (a mistyped
   * ACTION_RELAY_PREFIX) it warns and runs `empty` instead, creating no key.
   */
  const reading = async (fn: (ctx: RelayContext) => Promise<void>, empty: () => void) => {
    const cfg = config();
    await requireRedis(cfg);
    if (!(await hasRelayData(cfg))) {
      io.err(`warning: no action-relay data under prefix ${cfg.ACTION_RELAY_PREFIX} (check ACTION_RELAY_PREFIX and REDIS_URL)`);
      empty();
      return;
    }
    await withContext(fn);
  };

  program
    .command('worker')
    .description('run delivery workers and the /metrics, /healthz and /readyz listener on METRICS_PORT')
    .action(async () => {
      tuneV8ForDelivery();
      const { runWorker } = await import('./run-worker.js');
      const w = await runWorker(config());
      // A Redis that evicts keys stops the process with its message, as a bad environment variable does.
      const refused = w.setupChecked.then(
        () => new Promise<void>(() => undefined),
        async (err: unknown) => {
          await w.stop();
          throw err;
        },
      );
      await Promise.race([untilSignal(() => w.stop(), io), refused]);
    });

  program
    .command('api')
    .description('run the HTTP API on HOST:PORT')
    .action(async () => {
      const { runApi } = await import('./run-api.js');
      const a = await runApi(config());
      // A file of ACTIONS_DIR refused at start stops the process (exit 2, naming the file and fields).
      const refused = a.actionsApplied.then(
        () => new Promise<void>(() => undefined),
        async (err: unknown) => {
          await a.stop();
          throw err;
        },
      );
      await Promise.race([untilSignal(() => a.stop(), io), refused]);
    });

  program
    .command('demo')
    .description('api + worker + a mock third party + sample actions + sample traffic, in one command')
    .option('--rate <n>', 'sample jobs per second', positiveInt, 20)
    .option('--duration <seconds>', 'stop after this many seconds (default: until Ctrl-C)', positiveInt)
    .option('--receiver-port <port>', 'port of the mock third party', positiveInt, 4010)
    .action(async (opts: { rate: number; duration?: number; receiverPort: number }) => {
      const cfg = { ...config(), LOG_LEVEL: 'warn' as const };
      const { runDemo } = await import('../demo/run-demo.js');
      await runDemo(cfg, { rate: opts.rate, durationSeconds: opts.duration ?? 0, receiverPort: opts.receiverPort, print: io.out });
    });

  program
    .command('receiver')
    .description("run only the demo's mock third party (SMS at /sms, CRM at /crm, anything else 204)")
    .option('--port <port>', 'listen port', positiveInt, 4010)
    .option('--host <host>', 'bind address (0.0.0.0 in a container)', '127.0.0.1')
    .option('--failure-rate <share>', 'share of requests answered 503, to show retries', shareOption, 0.05)
    .action(async (opts: { port: number; host: string; failureRate: number }) => {
      const { startMockReceiver } = await import('../demo/mock-receiver.js');
      const receiver = await startMockReceiver({ port: opts.port, host: opts.host, failureRate: opts.failureRate });
      io.out(`mock receiver listening on ${opts.host}:${opts.port} (${receiver.url})`);
      await untilSignal(() => receiver.close(), io);
    });

  const actions = program.command('actions').description('manage action definitions');
  actions
    .command('apply <fileOrDir>')
    .description('create or replace the actions of a YAML/JSON file or of every such file in a folder')
    .action((target: string) =>
      withContext(async (ctx) => {
        // A file that cannot be read as actions is refused like an invalid definition: the other files are applied.
        const { files, refused } = await readActionFiles(target);
        let failed = refused.length;
        for (const { error } of refused) {
          io.err(error.message.split(': ')[0] ?? error.message);
          for (const p of error.problems) io.err(`  ${p.path || '(root)'}: ${p.message}`);
        }
        for (const f of files) {
          try {
            const saved = await ctx.store.put(f.definition, { keepUnchanged: true });
            const what = saved.unchanged ? 'unchanged' : saved.created ? 'created' : 'updated';
            io.out(`${what} ${saved.id} v${saved.version} (${f.path})`);
          } catch (err: unknown) {
            failed++;
            if (err instanceof ManagedByFilesError) {
              io.err(`${f.path}: ${err.message}`);
              continue;
            }
            if (!(err instanceof ValidationError)) throw err;
            io.err(`${f.path}: invalid action definition`);
            for (const p of err.problems) io.err(`  ${p.path || '(root)'}: ${p.message}`);
          }
        }
        if (failed > 0) io.setExitCode?.(2);
      }),
    );
  actions
    .command('list')
    .description('list the stored actions')
    .option('--json', 'print a JSON list: { id, version, updatedAt, managedBy?, definition } each')
    .action((o: { json?: boolean }) =>
      reading(
        async (ctx) => {
          const all = await ctx.store.list();
          if (o.json) {
            const items = all.map((a) => ({
              id: a.definition.id,
              version: a.version,
              updatedAt: new Date(a.updatedAt).toISOString(),
              ...(a.managedBy ? { managedBy: a.managedBy } : {}),
              definition: a.definition,
            }));
            io.out(JSON.stringify(items, null, 2));
            return;
          }
          printTable(
            io,
            ['ID', 'VERSION', 'ENDPOINT', 'NAME', 'MANAGED BY'],
            all.map(({ definition: d, version, managedBy }) => [
              d.id,
              `v${version}`,
              `${d.endpoint.method} ${d.endpoint.url}${d.endpoint.path ?? ''}`,
              d.name,
              managedBy ?? '-',
            ]),
          );
        },
        () => (o.json ? io.out('[]') : printTable(io, ['ID', 'VERSION', 'ENDPOINT', 'NAME', 'MANAGED BY'], [])),
      ),
    );
  actions
    .command('get <id>')
    .description('print one action definition as JSON, as `actions apply` takes it back')
    .option('--json', 'the same JSON (accepted for symmetry with the other read commands)')
    .action((id: string) =>
      reading(
        async (ctx) => {
          const a = await ctx.store.get(id);
          if (!a) throw new CliUsageError(`action "${id}" is not defined`);
          io.out(JSON.stringify(a.definition, null, 2));
        },
        () => {
          throw new CliUsageError(`action "${id}" is not defined`);
        },
      ),
    );
  actions
    .command('delete <id>')
    .description('delete one action')
    .action((id: string) =>
      withContext(async (ctx) => {
        try {
          if (!(await ctx.store.delete(id))) throw new CliUsageError(`action "${id}" is not defined`);
        } catch (err: unknown) {
          if (err instanceof ManagedByFilesError) throw new CliUsageError(err.message);
          throw err;
        }
        io.out(`deleted ${id}`);
      }),
    );

  program
    .command('enqueue <actionId>')
    .description('enqueue one job')
    .requiredOption('--params <json>', 'the parameters, a JSON object', jsonOption('--params'))
    .option('--context <json>', 'the journey context, a JSON object', jsonOption('--context'))
    .option('--idempotency-key <key>', 'the same key enqueued twice is one job')
    .option('--ordering-key <key>', 'jobs of the action with this key are delivered one at a time, in enqueue order')
    .option('--delay-ms <ms>', 'wait before the first attempt', positiveInt)
    .option('--traceparent <value>', "the caller's W3C trace context: the job's spans and request continue that trace")
    .action(
      (
        actionId: string,
        opts: {
          params: Record<string, unknown>;
          context?: Record<string, unknown>;
          idempotencyKey?: string;
          orderingKey?: string;
          delayMs?: number;
          traceparent?: string;
        },
      ) =>
        withContext(async (ctx) => {
          const result = await ctx.producer.enqueue({
            actionId,
            params: opts.params,
            context: opts.context ?? {},
            ...(opts.idempotencyKey !== undefined ? { idempotencyKey: opts.idempotencyKey } : {}),
            ...(opts.orderingKey !== undefined ? { orderingKey: opts.orderingKey } : {}),
            ...(opts.delayMs !== undefined ? { delayMs: opts.delayMs } : {}),
            ...(opts.traceparent !== undefined ? { traceparent: opts.traceparent } : {}),
          });
          io.out(JSON.stringify(result));
        }),
    );

  program
    .command('stats')
    .description('queue counts per state and DLQ size')
    .option('--json', 'print the counts as JSON (as GET /v1/stats)')
    .action((o: { json?: boolean }) =>
      reading(
        async (ctx) => {
          const stats = await getStats(ctx.queues, ctx.redis);
          if (o.json) {
            io.out(JSON.stringify(stats, null, 2));
            return;
          }
          const states = Object.keys(stats.queue) as (keyof QueueCounts)[];
          const rows = stats.partitions.map((p) => [
            `partition ${p.index}`,
            ...states.map((k) => p.counts[k]),
            p.dlq,
            p.resultsLength,
            p.waitingInLine,
          ]);
          if (stats.partitions.length > 1) {
            rows.push(['total', ...states.map((k) => stats.queue[k]), stats.dlq, stats.results, stats.waitingInLine]);
          }
          printTable(io, ['QUEUE', ...states.map((k) => k.toUpperCase()), 'DLQ', 'RESULTS', 'IN_LINE'], rows);
        },
        () => {
          const zero = { waiting: 0, delayed: 0, active: 0, delivered: 0, dead: 0, failed: 0 };
          if (o.json) io.out(JSON.stringify({ queue: zero, dlq: 0, results: 0, waitingInLine: 0, partitions: [] }, null, 2));
          else printTable(io, ['QUEUE', ...Object.keys(zero).map((k) => k.toUpperCase()), 'DLQ', 'RESULTS', 'IN_LINE'], []);
        },
      ),
    );

  registerDlqCommands(program, { withContext, reading }, io);
  return program;
}

/**
 * Runs the CLI and returns its exit code: 0, 1 for a failure (a bad configuration, Redis
 * unreachable), 2 for input the user can fix (usage, unknown ids, refused definitions). A
 * message, never a stack.
 */
export async function main(argv: string[], io: CliIo = defaultIo): Promise<number> {
  let code = 0;
  const cli = buildCli({ ...io, setExitCode: (c) => (code = c) });
  try {
    await cli.parseAsync(argv);
    return code;
  } catch (err: unknown) {
    // Commander printed its own message (or the help / version, exit code 0).
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    const e = coerceError(err);
    if (e instanceof ValidationError) {
      io.err(e.message.split(': ')[0] ?? e.message);
      for (const p of e.problems) io.err(`  ${p.path || '(root)'}: ${p.message}`);
      return 2;
    }
    if (e instanceof CliUsageError || e instanceof InvalidArgumentError) {
      io.err(`action-relay: ${e.message}`);
      return 2;
    }
    io.err(`action-relay: ${e.message}`);
    return 1;
  }
}
