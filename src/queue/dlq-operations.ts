import { z } from 'zod';
import type { DeadLetters, ReplayMapping } from './dead-letters.js';
import { dlqFilterSchema, matchesFilter, type DlqFilter } from './dead-letters.js';
import type { DeadLetterRecord } from './outcome-writer.js';

export const replayRequestSchema = z.strictObject({
  jobIds: z.array(z.string().min(1)).max(100_000).optional(),
  filter: dlqFilterSchema.optional(),
  /** Selects every dead letter: required to replay them all, so that an empty body selects nothing. */
  all: z.literal(true).optional(),
  /** Spread replays at this rate so the third party is never flooded. */
  ratePerSecond: z.number().positive().max(100_000).optional(),
  dryRun: z.boolean().default(false),
});
export type ReplayRequest = z.infer<typeof replayRequestSchema>;

/**
 * Whether a replay or purge names what it touches: `jobIds`, a filter with at least one field, or
 * `all: true`. An empty body or `{}` (a form post, a mistyped script) selects nothing.
 */
export function hasExplicitSelection(sel: {
  jobIds?: string[] | undefined;
  filter?: DlqFilter | undefined;
  all?: true | undefined;
}): boolean {
  if (sel.jobIds !== undefined || sel.all === true) return true;
  return Object.values(sel.filter ?? {}).some((v) => v !== undefined);
}

/**
 * Records named by ids (those that exist, each once, and that match the filter when one is given)
 * or matched by a filter, page by page.
 */
export async function* selectRecords(dl: DeadLetters, jobIds: string[] | undefined, filter: DlqFilter): AsyncGenerator<DeadLetterRecord[]> {
  if (jobIds) {
    const unique = [...new Set(jobIds)];
    for (let i = 0; i < unique.length; i += 500) {
      const recs = (await dl.getMany(unique.slice(i, i + 500))).filter((r) => matchesFilter(r, filter));
      if (recs.length > 0) yield recs;
    }
    return;
  }
  yield* dl.scan(filter);
}

export interface ReplayOutcome {
  matched: number;
  replayed: number;
  /** A dry run: the dead ids that would be replayed. */
  matchedIds: string[];
  /** Each dead id replayed and its new job's id. */
  replays: ReplayMapping[];
  /** Ids named in `jobIds` that have no dead letter. */
  unknownIds: string[];
}

/** Replays (or with dryRun only lists) the selected dead letters; reports progress per page. */
export async function replayDeadLetters(
  dl: DeadLetters,
  req: ReplayRequest,
  onProgress: (done: number) => void = () => undefined,
): Promise<ReplayOutcome> {
  const matchedIds: string[] = [];
  const replays: ReplayMapping[] = [];
  let matched = 0;
  for await (const page of selectRecords(dl, req.jobIds, req.filter ?? {})) {
    matchedIds.push(...page.map((r) => r.jobId));
    if (!req.dryRun) {
      replays.push(...(await dl.replay(page, { ...(req.ratePerSecond ? { ratePerSecond: req.ratePerSecond } : {}), startIndex: matched })));
    }
    matched += page.length;
    onProgress(matched);
  }
  const found = new Set(matchedIds);
  const unknownIds = (req.jobIds ?? []).filter((id) => !found.has(id));
  return { matched, replayed: req.dryRun ? 0 : matched, matchedIds, replays, unknownIds };
}

/** Removes the selected dead letters; reports progress per page, and the ids it selected (for an audit line). */
export async function purgeDeadLetters(
  dl: DeadLetters,
  jobIds: string[] | undefined,
  filter: DlqFilter,
  onProgress: (done: number) => void = () => undefined,
  onSelected: (ids: string[]) => void = () => undefined,
): Promise<number> {
  let purged = 0;
  for await (const page of selectRecords(dl, jobIds, filter)) {
    const ids = page.map((r) => r.jobId);
    onSelected(ids);
    purged += await dl.remove(ids);
    onProgress(purged);
  }
  return purged;
}
