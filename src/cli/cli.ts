import { Command, InvalidArgumentError } from 'commander';
import { loadConfig, type Config } from '../config/config.js';
import { createRelayContext, type RelayContext } from '../context/relay-context.js';
import { loadActionFiles } from '../actions/action-files.js';
import { ValidationError, coerceError } from '../errors/errors.js';
import { getStats } from '../queue/stats.js';
import { runApi } from './run-api.js';
import { runWorker } from './run-worker.js';
import { runDemo } from '../demo/run-demo.js';
import { startMockReceiver } from '../demo/mock-receiver.js';
import { createLogger } from '../logger.js';
import { VERSION } from '../version.js';
import { registerDlqCommands } from './dlq-commands.js';
import type { CliIo } from './cli-io.js';

export type { CliIo };

const defaultIo: CliIo = {
  out: (l) => process.stdout.write(`${l}\n`),
  err: (l) => process.stderr.write(`${l}\n`),
  env: process.env,
};

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

export function buildCli(io: CliIo = defaultIo): Command {
  const program = new Command('action-relay')
    .description('Deliver custom actions of a journey engine to third-party HTTP APIs')
    .version(VERSION)
    .showHelpAfterError()
    .configureOutput({ writeOut: (s) => io.out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) });

  const config = (): Config => loadConfig(io.env);
  /** Runs a short command with a context that is closed afterwards. */
  const withContext = async (fn: (ctx: RelayContext) => Promise<void>) => {
    const cfg = config();
    const ctx = await createRelayContext(cfg, { logger: createLogger('warn'), processMetrics: false, env: io.env });
    try {
      await fn(ctx);
    } finally {
      await ctx.close();
    }
  };

  program
    .command('worker')
    .description('run delivery workers and the /metrics + /healthz listener on METRICS_PORT')
    .action(async () => {
      const w = await runWorker(config());
      await untilSignal(() => w.stop(), io);
    });

  program
    .command('api')
    .description('run the HTTP API on HOST:PORT')
    .action(async () => {
      const a = await runApi(config());
      await untilSignal(() => a.stop(), io);
    });

  program
    .command('demo')
    .description('api + worker + a mock third party + sample actions + sample traffic, in one command')
    .option('--rate <n>', 'sample jobs per second', positiveInt, 20)
    .option('--duration <seconds>', 'stop after this many seconds (default: until Ctrl-C)', positiveInt)
    .option('--receiver-port <port>', 'port of the mock third party', positiveInt, 4010)
    .action(async (opts: { rate: number; duration?: number; receiverPort: number }) => {
      const cfg = { ...config(), LOG_LEVEL: 'warn' as const };
      await runDemo(cfg, { rate: opts.rate, durationSeconds: opts.duration ?? 0, receiverPort: opts.receiverPort, print: io.out });
    });

  program
    .command('receiver')
    .description("run only the demo's mock third party (SMS at /sms, CRM at /crm, anything else 204)")
    .option('--port <port>', 'listen port', positiveInt, 4010)
    .option('--host <host>', 'bind address (0.0.0.0 in a container)', '127.0.0.1')
    .option('--failure-rate <share>', 'share of requests answered 503, to show retries', shareOption, 0.05)
    .action(async (opts: { port: number; host: string; failureRate: number }) => {
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
        const files = await loadActionFiles(target);
        let failed = 0;
        for (const f of files) {
          try {
            const saved = await ctx.store.put(f.definition);
            io.out(`${saved.created ? 'created' : 'updated'} ${saved.id} v${saved.version} (${f.path})`);
          } catch (err: unknown) {
            if (!(err instanceof ValidationError)) throw err;
            failed++;
            io.err(`${f.path}: invalid action definition`);
            for (const p of err.problems) io.err(`  ${p.path || '(root)'}: ${p.message}`);
          }
        }
        if (failed > 0) process.exitCode = 2;
      }),
    );
  actions
    .command('list')
    .description('list the stored actions')
    .action(() =>
      withContext(async (ctx) => {
        for (const a of await ctx.store.list()) {
          io.out(
            `${a.definition.id}\tv${a.version}\t${a.definition.endpoint.method} ${a.definition.endpoint.url}${a.definition.endpoint.path ?? ''}\t${a.definition.name}`,
          );
        }
      }),
    );
  actions
    .command('get <id>')
    .description('print one action as JSON')
    .action((id: string) =>
      withContext(async (ctx) => {
        const a = await ctx.store.get(id);
        if (!a) {
          io.err(`action "${id}" is not defined`);
          process.exitCode = 1;
          return;
        }
        io.out(
          JSON.stringify({ id, version: a.version, updatedAt: new Date(a.updatedAt).toISOString(), definition: a.definition }, null, 2),
        );
      }),
    );
  actions
    .command('delete <id>')
    .description('delete one action')
    .action((id: string) =>
      withContext(async (ctx) => {
        if (await ctx.store.delete(id)) io.out(`deleted ${id}`);
        else {
          io.err(`action "${id}" is not defined`);
          process.exitCode = 1;
        }
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
    .action(
      (
        actionId: string,
        opts: {
          params: Record<string, unknown>;
          context?: Record<string, unknown>;
          idempotencyKey?: string;
          orderingKey?: string;
          delayMs?: number;
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
          });
          io.out(JSON.stringify(result));
        }),
    );

  program
    .command('stats')
    .description('queue counts per state and DLQ size')
    .action(() =>
      withContext(async (ctx) => {
        io.out(JSON.stringify(await getStats(ctx.queues, ctx.redis), null, 2));
      }),
    );

  registerDlqCommands(program, withContext, io);
  return program;
}

/** Runs the CLI; a bad configuration or input exits non-zero with a message, not a stack. */
export async function main(argv: string[], io: CliIo = defaultIo): Promise<void> {
  try {
    await buildCli(io).parseAsync(argv);
  } catch (err: unknown) {
    const e = coerceError(err);
    if (e instanceof ValidationError) {
      io.err(e.message.split(': ')[0] ?? e.message);
      for (const p of e.problems) io.err(`  ${p.path || '(root)'}: ${p.message}`);
      process.exitCode = 2;
      return;
    }
    io.err(`action-relay: ${e.message}`);
    process.exitCode = 1;
  }
}
