import { Cluster } from 'ioredis';
import { z } from 'zod';
import type { PartitionKeys, RedisClient } from '../redis/redis-connection.js';

const jsonField = z.string().transform((raw, ctx): Record<string, unknown> => {
  if (raw === '') return {};
  try {
    const value: unknown = JSON.parse(raw);
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // reported below
  }
  ctx.addIssue({ code: 'custom', message: 'a JSON object' });
  return z.NEVER;
});
const intField = z.string().regex(/^\d+$/, 'a whole number').transform(Number);

/**
 * One entry of the results stream as the worker writes it (flat string fields), turned into typed
 * values. Fields this version does not know are ignored, so a newer worker can add some.
 */
export const resultEntrySchema = z
  .object({
    jobId: z.string().min(1),
    actionId: z.string().min(1),
    outcome: z.enum(['delivered', 'dead']),
    /** The HTTP status of the last attempt; null when none came back (timeout, network, never sent). */
    status: z
      .string()
      .regex(/^(\d{3})?$/, 'an HTTP status or empty')
      .transform((s) => (s === '' ? null : Number(s))),
    reason: z.string(),
    attempts: intField,
    durationMs: intField,
    context: jsonField,
    response: jsonField,
    /** Captured error-response fields of a dead job; `{}` when none (or written by an older worker). */
    errorResponse: jsonField.default({}),
    /** The job's idempotency key, or its id when none was given (so also for an older worker's entry, which has none). */
    idempotencyKey: z.string().optional(),
    /** Only on a replayed job's entry: the id of the dead job it replays. */
    replayOf: z.string().optional(),
  })
  .transform((e) => ({ ...e, idempotencyKey: e.idempotencyKey ?? e.jobId }));

export type ResultEntry = z.infer<typeof resultEntrySchema> & {
  /** The stream entry id (`<ms>-<seq>`). */
  id: string;
  /** The queue partition whose stream holds it (0 when QUEUE_PARTITIONS is 1). */
  partition: number;
};

/** An entry that could not be read as a result: kept so that a consumer can acknowledge and log it. */
export interface MalformedResultEntry {
  id: string;
  partition: number;
  problem: string;
  fields: Record<string, string>;
}

export interface ResultBatch {
  entries: ResultEntry[];
  malformed: MalformedResultEntry[];
}

type StreamReply = [stream: string, entries: [id: string, fields: string[]][]][] | null;

function toFields(flat: string[]): Record<string, string> {
  const fields: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i] as string] = flat[i + 1] as string;
  return fields;
}

/** Reads one XREAD / XREADGROUP reply into typed entries, stream by stream. */
export function parseResultsReply(reply: StreamReply, partitions: readonly PartitionKeys[]): ResultBatch {
  const batch: ResultBatch = { entries: [], malformed: [] };
  for (const [stream, entries] of reply ?? []) {
    const partition = partitions.find((p) => p.results === stream)?.index ?? 0;
    for (const [id, flat] of entries) {
      const fields = toFields(flat ?? []);
      const parsed = resultEntrySchema.safeParse(fields);
      if (parsed.success) batch.entries.push({ ...parsed.data, id, partition });
      else {
        const problem = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
        batch.malformed.push({ id, partition, problem, fields });
      }
    }
  }
  return batch;
}

/** Where a reader stands in each partition's stream: the last entry id read there. */
export type ResultsCursor = readonly string[];

export interface ReadResultsOptions {
  /** Read entries after this cursor; `'start'` reads from the beginning, `'now'` only new ones. @defaultValue 'start' */
  after?: ResultsCursor | 'start' | 'now';
  /** At most this many entries per partition. @defaultValue 100 */
  count?: number;
  /** Wait this long for an entry when none is there (0: do not wait). @defaultValue 0 */
  blockMs?: number;
}

export interface ResultsRead extends ResultBatch {
  /** Pass it as `after` to read on. */
  cursor: ResultsCursor;
}

export interface ResultsGroupOptions {
  /** Where a new group starts: `'start'` (every entry kept) or `'now'`. @defaultValue 'start' */
  startAt?: 'start' | 'now';
}

export interface ResultsGroupReadOptions {
  /** At most this many entries per partition. @defaultValue 100 */
  count?: number;
  /** Wait this long for an entry when none is there. @defaultValue 0 */
  blockMs?: number;
  /**
   * `'new'` reads entries never delivered to this group; `'pending'` re-reads this consumer's
   * entries delivered but not acknowledged (after a crash). @defaultValue 'new'
   */
  which?: 'new' | 'pending';
}

/** A consumer group on the results stream(s): several journey-engine instances share the entries. */
export interface ResultsGroup {
  read(opts?: ResultsGroupReadOptions): Promise<ResultBatch>;
  /** Acknowledges handled entries (results and malformed ones alike). */
  ack(entries: readonly { id: string; partition: number }[]): Promise<number>;
}

export interface ResultsReader {
  read(opts?: ReadResultsOptions): Promise<ResultsRead>;
  /** Creates the group when it does not exist yet (and the stream with it), then reads as `consumer`. */
  group(name: string, consumer: string, opts?: ResultsGroupOptions): Promise<ResultsGroup>;
}

/**
 * Reads the results stream of every partition. `redis` should be a connection of its own when
 * `blockMs` is used: a blocked read holds it.
 */
export function createResultsReader(redis: RedisClient, partitions: readonly PartitionKeys[]): ResultsReader {
  const streams = partitions.map((p) => p.results);
  const blockArgs = (blockMs: number | undefined): ['BLOCK', number] | [] => (blockMs && blockMs > 0 ? ['BLOCK', blockMs] : []);

  return {
    async read(opts = {}) {
      const after = opts.after ?? 'start';
      const ids =
        after === 'start'
          ? streams.map(() => '0-0')
          : after === 'now'
            ? await Promise.all(streams.map((s) => lastId(redis, s)))
            : [...after];
      if (ids.length !== streams.length) {
        throw new RangeError(`the cursor has ${ids.length} positions, the deployment ${streams.length} partitions`);
      }
      const count = opts.count ?? 100;
      const reply = await xreadAll(redis, streams, ids, count, blockArgs(opts.blockMs));
      const batch = parseResultsReply(reply, partitions);
      const cursor = [...ids];
      for (const e of [...batch.entries, ...batch.malformed]) {
        if (compareIds(e.id, cursor[e.partition] as string) > 0) cursor[e.partition] = e.id;
      }
      return { ...batch, cursor };
    },

    async group(name, consumer, groupOpts = {}) {
      const start = groupOpts.startAt === 'now' ? '$' : '0';
      for (const stream of streams) {
        try {
          await redis.xgroup('CREATE', stream, name, start, 'MKSTREAM');
        } catch (err: unknown) {
          if (!(err instanceof Error) || !err.message.startsWith('BUSYGROUP')) throw err;
        }
      }
      return {
        async read(opts = {}) {
          const id = opts.which === 'pending' ? '0' : '>';
          const head = ['GROUP', name, consumer, 'COUNT', opts.count ?? 100, ...blockArgs(opts.blockMs), 'STREAMS'];
          // A Redis Cluster refuses one command over keys of several slots: one read per partition there.
          const replies =
            redis instanceof Cluster
              ? await Promise.all(streams.map((s) => redis.call('XREADGROUP', ...head, s, id) as Promise<StreamReply>))
              : [(await redis.call('XREADGROUP', ...head, ...streams, ...streams.map(() => id))) as StreamReply];
          const reply = replies.flatMap((r) => r ?? []);
          return parseResultsReply(reply, partitions);
        },
        async ack(entries) {
          let acked = 0;
          for (const p of partitions) {
            const ids = entries.filter((e) => e.partition === p.index).map((e) => e.id);
            if (ids.length > 0) acked += await redis.xack(p.results, name, ...ids);
          }
          return acked;
        },
      };
    },
  };
}

/**
 * One XREAD over every stream; on a Redis Cluster one per partition (keys of several slots), in
 * parallel, so with BLOCK the wait may add up when two partitions share a node.
 */
async function xreadAll(
  redis: RedisClient,
  streams: string[],
  ids: string[],
  count: number,
  block: ['BLOCK', number] | [],
): Promise<StreamReply> {
  if (!(redis instanceof Cluster) || streams.length === 1) {
    return (await redis.call('XREAD', 'COUNT', count, ...block, 'STREAMS', ...streams, ...ids)) as StreamReply;
  }
  const replies = await Promise.all(
    streams.map((s, i) => redis.call('XREAD', 'COUNT', count, ...block, 'STREAMS', s, ids[i] as string) as Promise<StreamReply>),
  );
  return replies.flatMap((r) => r ?? []);
}

async function lastId(redis: RedisClient, stream: string): Promise<string> {
  const last = (await redis.xrevrange(stream, '+', '-', 'COUNT', 1)) as [string, string[]][];
  return last[0]?.[0] ?? '0-0';
}

/** Orders two stream ids (`ms-seq`). */
function compareIds(a: string, b: string): number {
  const [am = 0n, as = 0n] = a.split('-').map(BigInt);
  const [bm = 0n, bs = 0n] = b.split('-').map(BigInt);
  return am === bm ? (as === bs ? 0 : as < bs ? -1 : 1) : am < bm ? -1 : 1;
}
