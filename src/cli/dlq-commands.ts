import { InvalidArgumentError, type Command } from 'commander';
import type { RelayContext } from '../context/relay-context.js';
import { dlqCursorSchema, isFilterTime, type DlqFilter } from '../queue/dead-letters.js';
import { purgeDeadLetters, replayDeadLetters, selectRecords } from '../queue/dlq-operations.js';
import { CliUsageError, printTable, type CliIo } from './cli-io.js';
import { DEAD_REASONS } from '../errors/errors.js';

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

function reason(value: string): string {
  if (!(DEAD_REASONS as readonly string[]).includes(value)) throw new InvalidArgumentError(`expected one of ${DEAD_REASONS.join(', ')}`);
  return value;
}

function httpStatus(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 100 || n > 599) throw new InvalidArgumentError('expected an HTTP status from 100 to 599');
  return n;
}

function time(value: string): string {
  if (!isFilterTime(value)) throw new InvalidArgumentError('expected an ISO-8601 date-time or epoch ms');
  return value;
}

function limit(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 1000) throw new InvalidArgumentError('expected an integer from 1 to 1000');
  return n;
}

function cursor(value: string): string {
  const parsed = dlqCursorSchema.safeParse(value);
  if (!parsed.success) throw new InvalidArgumentError(parsed.error.issues[0]?.message ?? 'expected the nextCursor of an earlier page');
  return value;
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
    .option('--reason <reason>', `only this reason (${DEAD_REASONS.join(', ')})`, reason)
    .option('--status <code>', 'only this HTTP status (100-599)', httpStatus)
    .option('--since <time>', 'failed at or after (ISO-8601 or epoch ms)', time)
    .option('--until <time>', 'failed at or before (ISO-8601 or epoch ms)', time);
}

/** A one-line progress bar on stderr for long replays and purges, drawn only on a terminal. */
function progress(io: CliIo, verb: string, total: number) {
  if (!io.stderrIsTty || !io.errRaw) return () => undefined;
  const draw = io.errRaw;
  return (done: number) => {
    const width = 30;
    const filled = total > 0 ? Math.round((done / total) * width) : width;
    draw(`\r${verb} ${done}/${total} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}]${done >= total ? '\n' : ''}`);
  };
}

/** The dead ids a command names, refusing (exit 2) when some have no dead letter: nothing is done then. */
async function knownIds(ctx: RelayContext, jobIds: string[]): Promise<void> {
  const found = new Set((await ctx.deadLetters.getMany(jobIds)).map((r) => r.jobId));
  const unknown = jobIds.filter((id) => !found.has(id));
  if (unknown.length > 0) throw new CliUsageError(`no dead letter for ${unknown.map((id) => `"${id}"`).join(', ')}: nothing done`);
}

export interface CommandRunners {
  /** Runs a command with a context closed afterwards. */
  withContext: (fn: (ctx: RelayContext) => Promise<void>) => Promise<void>;
  /** Runs a read command; `empty` instead under a prefix holding no action-relay data (after a warning). */
  reading: (fn: (ctx: RelayContext) => Promise<void>, empty: () => void) => Promise<void>;
}

const LIST_HEADER = ['JOB ID', 'ACTION', 'REASON', 'STATUS', 'ATTEMPTS', 'FAILED AT'];

export function registerDlqCommands(program: Command, run: CommandRunners, io: CliIo): void {
  const { withContext, reading } = run;
  const dlq = program.command('dlq').description('inspect, replay and purge dead-lettered jobs');

  withFilterOptions(dlq.command('list').description('list dead letters, newest first'))
    .option('--limit <n>', 'at most this many (1-1000)', limit, 50)
    .option('--cursor <c>', 'the page after an earlier one: its nextCursor', cursor)
    .option('--json', 'print { items, nextCursor } as GET /v1/dlq answers')
    .action((o: FilterOpts & { limit: number; cursor?: string; json?: boolean }) =>
      reading(
        async (ctx) => {
          const page = await ctx.deadLetters.list(toFilter(o), o.limit, o.cursor);
          if (o.json) {
            io.out(JSON.stringify(page, null, 2));
            return;
          }
          printTable(
            io,
            LIST_HEADER,
            page.items.map((i) => [i.jobId, i.actionId, i.reason, i.status ?? '-', i.attempts, i.failedAt]),
          );
          if (page.nextCursor) io.err(`(more: --cursor ${page.nextCursor})`);
        },
        () => (o.json ? io.out(JSON.stringify({ items: [], nextCursor: null }, null, 2)) : printTable(io, LIST_HEADER, [])),
      ),
    );

  dlq
    .command('show <jobId>')
    .description('print one dead-letter record as JSON')
    .option('--json', 'the same JSON (accepted for symmetry with the other read commands)')
    .action((jobId: string) =>
      reading(
        async (ctx) => {
          const rec = await ctx.deadLetters.get(jobId);
          if (!rec) throw new CliUsageError(`no dead letter for job "${jobId}"`);
          io.out(JSON.stringify(rec, null, 2));
        },
        () => {
          throw new CliUsageError(`no dead letter for job "${jobId}"`);
        },
      ),
    );

  withFilterOptions(dlq.command('replay [jobIds...]').description('enqueue dead jobs again with fresh attempts, behind live traffic'))
    .option('--all', 'every dead letter that matches the filter options')
    .option('--rate <n/s>', 'spread the replayed jobs at this rate', rate)
    .option('--dry-run', 'only list the dead ids that would be replayed')
    .option('--json', 'print { replayed, replays: [{ from, jobId }] } (dry run: { matched, jobIds })')
    .action((jobIds: string[], o: FilterOpts & { all?: boolean; rate?: number; dryRun?: boolean; json?: boolean }) =>
      withContext(async (ctx) => {
        const filter = toFilter(o);
        if (jobIds.length === 0 && !o.all) throw new CliUsageError('name job ids or use --all (with filter options)');
        const ids = jobIds.length > 0 ? jobIds : undefined;
        if (ids) await knownIds(ctx, ids);
        const selection = { ...(ids ? { jobIds: ids } : {}), filter };
        const dry = await replayDeadLetters(ctx.deadLetters, { ...selection, dryRun: true });
        if (o.dryRun) {
          if (o.json) io.out(JSON.stringify({ matched: dry.matched, jobIds: dry.matchedIds }, null, 2));
          else {
            io.out(`would replay ${dry.matched} job(s):`);
            for (const id of dry.matchedIds) io.out(id);
          }
          return;
        }
        const r = await replayDeadLetters(
          ctx.deadLetters,
          { ...selection, dryRun: false, ...(o.rate ? { ratePerSecond: o.rate } : {}) },
          progress(io, 'replayed', dry.matched),
        );
        if (o.json) {
          io.out(JSON.stringify({ replayed: r.replayed, replays: r.replays }, null, 2));
          return;
        }
        printTable(
          io,
          ['DEAD JOB ID', 'NEW JOB ID'],
          r.replays.map((m) => [m.from, m.jobId]),
        );
        io.err(`replayed ${r.replayed} job(s)${o.rate ? ` spread at ${o.rate}/s` : ''}`);
      }),
    );

  withFilterOptions(dlq.command('purge [jobIds...]').description('delete dead letters'))
    .option('--all', 'every dead letter that matches the filter options')
    .option('--dry-run', 'only list the dead ids that would be deleted')
    .option('--json', 'print { purged } (dry run: { matched, jobIds })')
    .action((jobIds: string[], o: FilterOpts & { all?: boolean; dryRun?: boolean; json?: boolean }) =>
      withContext(async (ctx) => {
        if (jobIds.length === 0 && !o.all) throw new CliUsageError('name job ids or use --all (with filter options)');
        const ids = jobIds.length > 0 ? jobIds : undefined;
        if (ids) await knownIds(ctx, ids);
        const filter = toFilter(o);
        if (o.dryRun) {
          const matched: string[] = [];
          for await (const page of selectRecords(ctx.deadLetters, ids, filter)) matched.push(...page.map((r) => r.jobId));
          if (o.json) io.out(JSON.stringify({ matched: matched.length, jobIds: matched }, null, 2));
          else {
            io.out(`would purge ${matched.length} dead letter(s):`);
            for (const id of matched) io.out(id);
          }
          return;
        }
        const purged = await purgeDeadLetters(ctx.deadLetters, ids, filter, () => undefined);
        if (o.json) io.out(JSON.stringify({ purged }));
        else io.out(`purged ${purged} dead letter(s)`);
      }),
    );
}
