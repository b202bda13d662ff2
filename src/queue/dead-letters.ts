import { randomUUID } from 'node:crypto';
import type { Queue } from 'bullmq';
import { z } from 'zod';
import type { RedisClient, RelayKeys } from '../redis/redis-connection.js';
import type { DeadLetterRecord } from './outcome-writer.js';
import type { JobData } from './job-schema.js';

export const dlqFilterSchema = z.strictObject({
  actionId: z.string().optional(),
  reason: z.string().optional(),
  status: z.coerce.number().int().optional(),
  /** ISO date-time or epoch ms: failed at or after. */
  since: z.union([z.string(), z.number()]).optional(),
  /** ISO date-time or epoch ms: failed at or before. */
  until: z.union([z.string(), z.number()]).optional(),
});
export type DlqFilter = z.infer<typeof dlqFilterSchema>;

export interface DlqSummary {
  jobId: string;
  actionId: string;
  reason: string;
  status: number | null;
  attempts: number;
  failedAt: string;
}

/** Priority of replayed jobs: BullMQ takes jobs without a priority first, so replays run behind live traffic. */
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
  /** Newest first; `cursor` is the `nextCursor` of the previous page. */
  list(filter: DlqFilter, limit: number, cursor?: string): Promise<{ items: DlqSummary[]; nextCursor: string | null }>;
  /** Every record matching, newest first, page by page. */
  scan(filter: DlqFilter): AsyncGenerator<DeadLetterRecord[]>;
  /**
   * Enqueues each record again as a new job (fresh attempts, current definition, linked by
   * `replayOf`), behind live jobs, spread at `ratePerSecond`; then removes the record.
   */
  replay(records: DeadLetterRecord[], opts: { ratePerSecond?: number; startIndex?: number }): Promise<string[]>;
  remove(jobIds: string[]): Promise<number>;
  /** Deletes dead letters older than `maxAgeMs` and the oldest beyond `maxCount`; returns how many. */
  trim(maxAgeMs: number, maxCount: number, now?: number): Promise<number>;
}

export function createDeadLetters(redis: RedisClient, keys: RelayKeys, queue: Queue): DeadLetters {
  async function records(ids: string[]): Promise<DeadLetterRecord[]> {
    if (ids.length === 0) return [];
    const raw = await redis.hmget(keys.dlqRecords, ...ids);
    return raw.flatMap((r) => (r === null ? [] : [JSON.parse(r) as DeadLetterRecord]));
  }

  /** Pages of matching records, newest first, over a fixed score range (stable while nothing is removed). */
  async function* pages(filter: DlqFilter, startAfter?: { score: number; id: string }) {
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
      const recs = (await records([...scores.keys()])).filter((r) => matches(r, filter));
      yield recs.map((rec) => ({ rec, score: scores.get(rec.jobId) ?? 0 }));
      if (flat.length < PAGE * 2) return;
    }
  }

  return {
    async get(jobId) {
      const [rec] = await records([jobId]);
      return rec ?? null;
    },
    async list(filter, limit, cursor) {
      let startAfter: { score: number; id: string } | undefined;
      if (cursor) {
        const i = cursor.indexOf(':');
        startAfter = { score: Number(cursor.slice(0, i)), id: cursor.slice(i + 1) };
      }
      const items: { rec: DeadLetterRecord; score: number }[] = [];
      for await (const page of pages(filter, startAfter)) {
        items.push(...page);
        if (items.length > limit) break;
      }
      const shown = items.slice(0, limit);
      const last = shown.at(-1);
      return {
        items: shown.map((i) => summarize(i.rec)),
        nextCursor: items.length > limit && last ? `${last.score}:${last.rec.jobId}` : null,
      };
    },
    async *scan(filter) {
      // Ids first, so that replaying or purging while scanning cannot shift a page.
      const ids = await redis.zrevrangebyscore(keys.dlq, toMs(filter.until, Number.MAX_SAFE_INTEGER), toMs(filter.since, 0));
      for (let i = 0; i < ids.length; i += PAGE) {
        const recs = (await records(ids.slice(i, i + PAGE))).filter((r) => matches(r, filter));
        if (recs.length > 0) yield recs;
      }
    },
    async replay(recs, opts) {
      const spacing = opts.ratePerSecond ? 1000 / opts.ratePerSecond : 0;
      const start = opts.startIndex ?? 0;
      const jobs = recs.map((rec, i) => {
        const data: JobData = { params: rec.job.params, context: rec.job.context, replayOf: rec.jobId };
        if (rec.job.idempotencyKey !== undefined) data.idempotencyKey = rec.job.idempotencyKey;
        const delay = Math.round((start + i) * spacing);
        return { name: rec.actionId, data, opts: { jobId: randomUUID(), priority: REPLAY_PRIORITY, ...(delay > 0 ? { delay } : {}) } };
      });
      if (jobs.length === 0) return [];
      const added = await queue.addBulk(jobs);
      // Removed only once the new jobs exist: a crash in between leaves a record to replay again, never none.
      await this.remove(recs.map((r) => r.jobId));
      return added.map((j) => j.id as string);
    },
    async trim(maxAgeMs, maxCount, now = Date.now()) {
      let removed = 0;
      for (;;) {
        const old = await redis.zrangebyscore(keys.dlq, 0, now - maxAgeMs, 'LIMIT', 0, PAGE);
        if (old.length === 0) break;
        removed += await this.remove(old);
      }
      for (;;) {
        const excess = (await redis.zcard(keys.dlq)) - maxCount;
        if (excess <= 0) break;
        removed += await this.remove(await redis.zrange(keys.dlq, 0, Math.min(excess, PAGE) - 1));
      }
      return removed;
    },
    async remove(jobIds) {
      if (jobIds.length === 0) return 0;
      const [[, removed]] = (await redis
        .multi()
        .zrem(keys.dlq, ...jobIds)
        .hdel(keys.dlqRecords, ...jobIds)
        .exec()) as [[null, number], [null, number]];
      return removed;
    },
  };
}
