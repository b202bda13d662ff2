import { createHash } from 'node:crypto';
import type { JobsOptions } from 'bullmq';
import { z } from 'zod';
import type { PartitionKeys, RedisClient } from '../redis/redis-connection.js';
import type { DeadLetterRecord } from './outcome-writer.js';
import type { JobData } from './job-schema.js';
import type { DeliveryQueues, QueuePartition } from './delivery-queue.js';
import type { ReplayPointer } from './job-status.js';
import { luaScript } from '../redis/lua-script.js';
import { ValidationError } from '../errors/errors.js';

/** A time the DLQ filters take: epoch ms (a number, or a string of digits) or a date-time Date.parse reads. */
export function isFilterTime(v: string | number): boolean {
  return typeof v === 'number' || /^\d+$/.test(v) || !Number.isNaN(Date.parse(v));
}

/** Refused when the filter is parsed (a 400 naming the field), not when the DLQ is read. */
const filterTime = z.union([z.string(), z.number()]).refine(isFilterTime, { message: 'expected an ISO-8601 date-time or epoch ms' });

export const dlqFilterSchema = z.strictObject({
  actionId: z.string().optional(),
  reason: z.string().optional(),
  status: z.coerce.number().int().optional(),
  /** ISO date-time or epoch ms: failed at or after. */
  since: filterTime.optional(),
  /** ISO date-time or epoch ms: failed at or before. */
  until: filterTime.optional(),
});
export type DlqFilter = z.infer<typeof dlqFilterSchema>;

/** Where a DLQ page ends: the `nextCursor` "<score>:<job id>" of the page before. */
interface PageCursor {
  score: number;
  id: string;
}

/** A cursor as `list` hands it out, or null: anything else would reach Redis as a score it refuses. */
function parseCursor(cursor: string): PageCursor | null {
  const m = /^(\d+(?:\.\d+)?):(.+)$/s.exec(cursor);
  const score = Number(m?.[1]);
  return m && Number.isFinite(score) ? { score, id: m[2] as string } : null;
}

const CURSOR_PROBLEM = 'expected the nextCursor of an earlier page';

/** The `cursor` of a DLQ list query (empty: the first page); refused when parsed (a 400 naming the field), not when the DLQ is read. */
export const dlqCursorSchema = z.string().refine((c) => c === '' || parseCursor(c) !== null, { message: CURSOR_PROBLEM });

/**
 * The id of a dead letter's replay: the same for every replay of the same record, so that two
 * replays at once (a double click, a client retrying its request, two operators) or a replay run
 * again after a crash add one job, not two (BullMQ adds nothing for an id it holds). A UUID, as
 * every job id is, made from the dead job's id and when it died.
 */
export function replayJobId(rec: Pick<DeadLetterRecord, 'jobId' | 'failedAt'>): string {
  const h = createHash('sha256').update(`replay\0${rec.jobId}\0${rec.failedAt}`).digest('hex');
  const variant = ((parseInt(h[16] as string, 16) & 0x3) | 0x8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

export interface DlqSummary {
  jobId: string;
  actionId: string;
  reason: string;
  status: number | null;
  attempts: number;
  failedAt: string;
}

/** One replayed dead letter: the dead job's id and the new job's. */
export interface ReplayMapping {
  from: string;
  jobId: string;
}

/*
 * Removes replayed dead letters of one partition and leaves each a pointer to its new job, in one
 * step, so that GET /v1/jobs/<dead id> never finds neither.
 * KEYS[1] dlq index (zset), KEYS[2] dlq records (hash), KEYS[3..n+2] the pointer key of each job
 * ARGV[1] pointer lifetime in seconds, ARGV[2..n+1] the dead job ids, ARGV[n+2..2n+1] the pointers (JSON)
 * Returns how many records were removed (a record already gone leaves no pointer).
 */
const REMOVE_REPLAYED = luaScript(`
local n = #KEYS - 2
local removed = 0
for i = 1, n do
  local id = ARGV[i + 1]
  if redis.call('HDEL', KEYS[2], id) == 1 then
    removed = removed + 1
    redis.call('SET', KEYS[i + 2], ARGV[n + i + 1], 'EX', ARGV[1])
  end
  redis.call('ZREM', KEYS[1], id)
end
return removed
`);

/** Priority of replayed jobs: behind fresh jobs (FRESH_PRIORITY 1), so replays run behind live traffic. */
export const REPLAY_PRIORITY = 1000;
const PAGE = 500;

function toMs(v: string | number | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v === 'number') return v;
  const n = /^\d+$/.test(v) ? Number(v) : Date.parse(v);
  if (Number.isNaN(n)) throw new Error(`not a date: ${v}`);
  return n;
}

function matches(rec: DeadLetterRecord, f: DlqFilter): boolean {
  return (
    (f.actionId === undefined || rec.actionId === f.actionId) &&
    (f.reason === undefined || rec.reason === f.reason) &&
    (f.status === undefined || rec.status === f.status)
  );
}

/**
 * Whether a dead letter fetched by id matches the filter, its time range included (`since` and
 * `until` inclusive, as the dead-letter index's scores are read): ids and a filter select the
 * named dead letters that match it.
 */
export function matchesFilter(rec: DeadLetterRecord, f: DlqFilter): boolean {
  if (!matches(rec, f)) return false;
  const at = Date.parse(rec.failedAt);
  return at >= toMs(f.since, 0) && at <= toMs(f.until, Number.MAX_SAFE_INTEGER);
}

export function summarize(rec: DeadLetterRecord): DlqSummary {
  return {
    jobId: rec.jobId,
    actionId: rec.actionId,
    reason: rec.reason,
    status: rec.status,
    attempts: rec.attempts.length,
    failedAt: rec.failedAt,
  };
}

export interface DeadLetters {
  get(jobId: string): Promise<DeadLetterRecord | null>;
  /** The records of these ids that exist, in the order given (one HMGET per partition). */
  getMany(jobIds: string[]): Promise<DeadLetterRecord[]>;
  /** Newest first; `cursor` is the `nextCursor` of the previous page. */
  list(filter: DlqFilter, limit: number, cursor?: string): Promise<{ items: DlqSummary[]; nextCursor: string | null }>;
  /** Every record matching, newest first, page by page. */
  scan(filter: DlqFilter): AsyncGenerator<DeadLetterRecord[]>;
  /**
   * Enqueues each record again as a new job (fresh attempts, current definition, the dead job's
   * idempotency key or else its id, linked by `replayOf`), behind live jobs, spread at
   * `ratePerSecond`; then removes the record.
   */
  replay(records: DeadLetterRecord[], opts: { ratePerSecond?: number; startIndex?: number }): Promise<ReplayMapping[]>;
  remove(jobIds: string[]): Promise<number>;
  /** Deletes dead letters older than `maxAgeMs` and the oldest beyond `maxCount`; returns how many. */
  trim(maxAgeMs: number, maxCount: number, now?: number): Promise<number>;
}

export interface DeadLettersDeps {
  redis: RedisClient;
  /** Every partition holds dead letters of its own jobs; reads merge them. */
  queues: DeliveryQueues;
  /** The partition a replayed job goes to (its action's current rate-limit key). */
  route(actionId: string): Promise<QueuePartition>;
  /** How long `GET /v1/jobs/<dead id>` still answers `replayedAs` after a replay. @defaultValue 30 days */
  replayPointerTtlSeconds?: number;
}

interface Scored {
  rec: DeadLetterRecord;
  score: number;
}

/** Newest first; same-score members in reverse id order, as ZREVRANGEBYSCORE gives them. */
const newestFirst = (a: { score: number; id: string }, b: { score: number; id: string }) =>
  b.score - a.score || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);

export function createDeadLetters(deps: DeadLettersDeps): DeadLetters {
  const { redis, queues } = deps;
  const partitions = queues.partitions.map((p) => p.keys);

  async function recordsIn(keys: PartitionKeys, ids: string[]): Promise<(DeadLetterRecord | null)[]> {
    if (ids.length === 0) return [];
    const raw = await redis.hmget(keys.dlqRecords, ...ids);
    return raw.map((r) => (r === null ? null : (JSON.parse(r) as DeadLetterRecord)));
  }

  /** The records of these ids, from whichever partition holds each, in the order given. */
  async function records(ids: string[]): Promise<DeadLetterRecord[]> {
    const found = await Promise.all(partitions.map((keys) => recordsIn(keys, ids)));
    return ids.flatMap((_, i) => {
      for (const f of found) if (f[i]) return [f[i]];
      return [];
    });
  }

  /** One partition's pages of matching records, newest first, over a fixed score range (stable while nothing is removed). */
  async function* pages(keys: PartitionKeys, filter: DlqFilter, startAfter?: PageCursor): AsyncGenerator<Scored[]> {
    const min = toMs(filter.since, 0);
    const max = startAfter?.score ?? toMs(filter.until, Number.MAX_SAFE_INTEGER);
    for (let offset = 0; ; offset += PAGE) {
      const flat = await redis.zrevrangebyscore(keys.dlq, max, min, 'WITHSCORES', 'LIMIT', offset, PAGE);
      const scores = new Map<string, number>();
      for (let i = 0; i < flat.length; i += 2) {
        const id = flat[i] as string;
        const score = Number(flat[i + 1]);
        // Same-score members come in reverse id order: skip up to the cursor's.
        if (startAfter && score === startAfter.score && id >= startAfter.id) continue;
        scores.set(id, score);
      }
      const recs = (await recordsIn(keys, [...scores.keys()])).filter((r): r is DeadLetterRecord => r !== null && matches(r, filter));
      yield recs.map((rec) => ({ rec, score: scores.get(rec.jobId) ?? 0 }));
      if (flat.length < PAGE * 2) return;
    }
  }

  /** Up to `limit` matching records of one partition after the cursor. */
  async function firstOf(keys: PartitionKeys, filter: DlqFilter, limit: number, startAfter?: PageCursor) {
    const items: Scored[] = [];
    for await (const page of pages(keys, filter, startAfter)) {
      items.push(...page);
      if (items.length >= limit) break;
    }
    return items.slice(0, limit);
  }

  async function removeIn(keys: PartitionKeys, jobIds: string[]): Promise<number> {
    if (jobIds.length === 0) return 0;
    // Both keys share the partition's hash tag: one slot, so MULTI works on a Redis Cluster.
    const [[, removed]] = (await redis
      .multi()
      .zrem(keys.dlq, ...jobIds)
      .hdel(keys.dlqRecords, ...jobIds)
      .exec()) as [[null, number], [null, number]];
    return removed;
  }

  const pointerTtl = String(deps.replayPointerTtlSeconds ?? 30 * 86_400);
  /** Removes these records from one partition (those it holds), leaving each its replay pointer. */
  async function removeReplayed(keys: PartitionKeys, recs: DeadLetterRecord[], mapping: ReplayMapping[]): Promise<number> {
    const pointers = recs.map((rec, i) => {
      const last = rec.attempts.at(-1);
      const p: ReplayPointer = {
        jobId: mapping[i]?.jobId as string,
        actionId: rec.actionId,
        attempts: rec.attempts.length,
        reason: rec.reason,
        status: rec.status,
        message: last?.error?.message ?? (rec.status ? `HTTP ${rec.status}` : rec.reason),
        errorResponse: rec.errorResponse ?? {},
      };
      return JSON.stringify(p);
    });
    const ids = recs.map((r) => r.jobId);
    const removed = await REMOVE_REPLAYED.run(
      redis,
      ids.length + 2,
      keys.dlq,
      keys.dlqRecords,
      ...ids.map((id) => keys.replayedAs(id)),
      pointerTtl,
      ...ids,
      ...pointers,
    );
    return removed as number;
  }

  return {
    async get(jobId) {
      const [rec] = await records([jobId]);
      return rec ?? null;
    },
    getMany: records,
    async list(filter, limit, cursor) {
      const startAfter = cursor ? parseCursor(cursor) : undefined;
      if (startAfter === null) throw new ValidationError('invalid request', [{ path: 'cursor', message: CURSOR_PROBLEM }]);
      // limit + 1 from each partition, merged: the first limit + 1 overall are among them.
      const perPartition = await Promise.all(partitions.map((keys) => firstOf(keys, filter, limit + 1, startAfter)));
      const items = perPartition
        .flat()
        .sort((a, b) => newestFirst({ score: a.score, id: a.rec.jobId }, { score: b.score, id: b.rec.jobId }));
      const shown = items.slice(0, limit);
      const last = shown.at(-1);
      return {
        items: shown.map((i) => summarize(i.rec)),
        nextCursor: items.length > limit && last ? `${last.score}:${last.rec.jobId}` : null,
      };
    },
    async *scan(filter) {
      // Ids first, so that replaying or purging while scanning cannot shift a page.
      const max = toMs(filter.until, Number.MAX_SAFE_INTEGER);
      const min = toMs(filter.since, 0);
      const ids = (
        await Promise.all(
          partitions.map(async (keys) => {
            const flat = await redis.zrevrangebyscore(keys.dlq, max, min, 'WITHSCORES');
            const out: { id: string; score: number; keys: PartitionKeys }[] = [];
            for (let i = 0; i < flat.length; i += 2) out.push({ id: flat[i] as string, score: Number(flat[i + 1]), keys });
            return out;
          }),
        )
      )
        .flat()
        .sort(newestFirst);
      for (let i = 0; i < ids.length; i += PAGE) {
        const page = ids.slice(i, i + PAGE);
        const found = await Promise.all(
          partitions.map((keys) =>
            recordsIn(
              keys,
              page.filter((e) => e.keys === keys).map((e) => e.id),
            ),
          ),
        );
        const byId = new Map(found.flat().flatMap((r) => (r ? [[r.jobId, r] as const] : [])));
        const recs = page.flatMap((e) => {
          const r = byId.get(e.id);
          return r && matches(r, filter) ? [r] : [];
        });
        if (recs.length > 0) yield recs;
      }
    },
    async replay(recs, opts) {
      const spacing = opts.ratePerSecond ? 1000 / opts.ratePerSecond : 0;
      const start = opts.startIndex ?? 0;
      if (recs.length === 0) return [];
      const routes = new Map<string, Promise<QueuePartition>>();
      const targets = await Promise.all(
        recs.map((rec) => {
          let route = routes.get(rec.actionId);
          if (!route) routes.set(rec.actionId, (route = deps.route(rec.actionId)));
          return route;
        }),
      );
      const byPartition = new Map<QueuePartition, { index: number; job: { name: string; data: JobData; opts: JobsOptions } }[]>();
      recs.forEach((rec, i) => {
        // The dead job's own key, its id when none was given: the replay's requests and results entry
        // keep it. Added without BullMQ deduplication, so the original's key cannot swallow the replay.
        const idempotencyKey = rec.job.idempotencyKey ?? rec.jobId;
        const data: JobData = { params: rec.job.params, context: rec.job.context, idempotencyKey, replayOf: rec.jobId };
        const delay = Math.round((start + i) * spacing);
        const job = {
          name: rec.actionId,
          data,
          opts: { jobId: replayJobId(rec), priority: REPLAY_PRIORITY, ...(delay > 0 ? { delay } : {}) },
        };
        const target = targets[i] as QueuePartition;
        const list = byPartition.get(target);
        if (list) list.push({ index: i, job });
        else byPartition.set(target, [{ index: i, job }]);
      });
      const ids: string[] = new Array<string>(recs.length);
      await Promise.all(
        [...byPartition].map(async ([partition, jobs]) => {
          const added = await partition.queue.addBulk(jobs.map((j) => j.job));
          added.forEach((a, k) => (ids[jobs[k]?.index as number] = a.id as string));
        }),
      );
      // Removed only once the new jobs exist: a crash in between leaves a record to replay again, never
      // none, and replaying it again adds no second job (replayJobId).
      const mapping = recs.map((rec, i) => ({ from: rec.jobId, jobId: ids[i] as string }));
      await Promise.all(partitions.map((keys) => removeReplayed(keys, recs, mapping)));
      return mapping;
    },
    async trim(maxAgeMs, maxCount, now = Date.now()) {
      let removed = 0;
      for (const keys of partitions) {
        for (;;) {
          const old = await redis.zrangebyscore(keys.dlq, 0, now - maxAgeMs, 'LIMIT', 0, PAGE);
          if (old.length === 0) break;
          removed += await removeIn(keys, old);
        }
      }
      // maxCount bounds all partitions together: the oldest overall go first.
      for (;;) {
        const sizes = await Promise.all(partitions.map((keys) => redis.zcard(keys.dlq)));
        const excess = sizes.reduce((a, b) => a + b, 0) - maxCount;
        if (excess <= 0) break;
        const n = Math.min(excess, PAGE);
        const oldest = (
          await Promise.all(
            partitions.map(async (keys) => {
              const flat = await redis.zrange(keys.dlq, 0, n - 1, 'WITHSCORES');
              const out: { id: string; score: number; keys: PartitionKeys }[] = [];
              for (let i = 0; i < flat.length; i += 2) out.push({ id: flat[i] as string, score: Number(flat[i + 1]), keys });
              return out;
            }),
          )
        )
          .flat()
          .sort((a, b) => newestFirst(b, a))
          .slice(0, n);
        for (const keys of partitions) {
          removed += await removeIn(
            keys,
            oldest.filter((e) => e.keys === keys).map((e) => e.id),
          );
        }
      }
      return removed;
    },
    async remove(jobIds) {
      const counts = await Promise.all(partitions.map((keys) => removeIn(keys, jobIds)));
      return counts.reduce((a, b) => a + b, 0);
    },
  };
}
