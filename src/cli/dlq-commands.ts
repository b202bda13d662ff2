import { InvalidArgumentError, type Command } from 'commander';
import type { RelayContext } from '../context/relay-context.js';
import type { DlqFilter } from '../queue/dead-letters.js';
import { purgeDeadLetters, replayDeadLetters } from '../queue/dlq-operations.js';
import type { CliIo } from './cli-io.js';

interface FilterOpts {
  action?: string;
  reason?: string;
  status?: number;
  since?: string;
  until?: string;
}

function rate(value: string): number {
  const n = Number(value.replace(/\/s$/, ''));
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected jobs per second, e.g. 50 or 50/s');
  return n;
}

function toFilter(o: FilterOpts): DlqFilter {
  const f: DlqFilter = {};
  if (o.action !== undefined) f.actionId = o.action;
  if (o.reason !== undefined) f.reason = o.reason;
  if (o.status !== undefined) f.status = o.status;
  if (o.since !== undefined) f.since = o.since;
  if (o.until !== undefined) f.until = o.until;
  return f;
}

function withFilterOptions(cmd: Command): Command {
  return cmd
    .option('--action <id>', 'only this action')
    .option('--reason <reason>', 'only this reason (http_status, timeout, network, ...)')
    .option('--status <code>', 'only this HTTP status', (v) => Number(v))
    .option('--since <time>', 'failed at or after (ISO-8601 or epoch ms)')
    .option('--until <time>', 'failed at or before (ISO-8601 or epoch ms)');
}

/** A one-line progress bar on stderr for long replays and purges. */
function progress(io: CliIo, verb: string, total: number) {
  const isTty = process.stderr.isTTY === true;
  return (done: number) => {
    const width = 30;
    const filled = total > 0 ? Math.round((done / total) * width) : width;
    const line = `${verb} ${done}/${total} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
    if (isTty) process.stderr.write(`\r${line}${done >= total ? '\n' : ''}`);
    else if (done >= total) io.err(line);
  };
}

export function registerDlqCommands(
  program: Command,
  withContext: (fn: (ctx: RelayContext) => Promise<void>) => Promise<void>,
  io: CliIo,
): void {
  const dlq = program.command('dlq').description('inspect, replay and purge dead-lettered jobs');

  withFilterOptions(dlq.command('list').description('list dead letters, newest first'))
    .option('--limit <n>', 'at most this many', (v) => Number(v), 50)
    .action((o: FilterOpts & { limit: number }) =>
      withContext(async (ctx) => {
        const page = await ctx.deadLetters.list(toFilter(o), o.limit);
        for (const i of page.items)
          io.out(`${i.jobId}\t${i.actionId}\t${i.reason}\t${i.status ?? '-'}\t${i.attempts} attempt(s)\t${i.failedAt}`);
        if (page.nextCursor) io.err(`(more: raise --limit)`);
      }),
    );

  dlq
    .command('show <jobId>')
    .description('print one dead-letter record')
    .action((jobId: string) =>
      withContext(async (ctx) => {
        const rec = await ctx.deadLetters.get(jobId);
        if (!rec) {
          io.err(`no dead letter for job "${jobId}"`);
          process.exitCode = 1;
          return;
        }
        io.out(JSON.stringify(rec, null, 2));
      }),
    );

  withFilterOptions(dlq.command('replay [jobIds...]').description('enqueue dead jobs again with fresh attempts, behind live traffic'))
    .option('--all', 'every dead letter that matches the filter options')
    .option('--rate <n/s>', 'spread the replayed jobs at this rate', rate)
    .option('--dry-run', 'only say what would be replayed')
    .action((jobIds: string[], o: FilterOpts & { all?: boolean; rate?: number; dryRun?: boolean }) =>
      withContext(async (ctx) => {
        const filter = toFilter(o);
        if (jobIds.length === 0 && !o.all) throw new InvalidArgumentError('name job ids or use --all (with filter options)');
        const ids = jobIds.length > 0 ? jobIds : undefined;
        const total = (await replayDeadLetters(ctx.deadLetters, { ...(ids ? { jobIds: ids } : {}), filter, dryRun: true })).matched;
        if (o.dryRun) {
          io.out(`would replay ${total} job(s)`);
          return;
        }
        const r = await replayDeadLetters(
          ctx.deadLetters,
          { ...(ids ? { jobIds: ids } : {}), filter, dryRun: false, ...(o.rate ? { ratePerSecond: o.rate } : {}) },
          progress(io, 'replayed', total),
        );
        io.out(`replayed ${r.replayed} job(s)${o.rate ? ` spread at ${o.rate}/s` : ''}`);
      }),
    );

  withFilterOptions(dlq.command('purge [jobIds...]').description('delete dead letters'))
    .option('--all', 'every dead letter that matches the filter options')
    .action((jobIds: string[], o: FilterOpts & { all?: boolean }) =>
      withContext(async (ctx) => {
        if (jobIds.length === 0 && !o.all) throw new InvalidArgumentError('name job ids or use --all (with filter options)');
        const purged = await purgeDeadLetters(ctx.deadLetters, jobIds.length > 0 ? jobIds : undefined, toFilter(o), () => undefined);
        io.out(`purged ${purged} dead letter(s)`);
      }),
    );
}
