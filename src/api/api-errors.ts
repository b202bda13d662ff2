import type { FastifyReply } from 'fastify';
import type { FieldProblem } from '../errors/errors.js';
import type { EnqueueManyItem } from '../queue/producer.js';

export interface ApiErrorBody {
  error: { code: string; message: string; details?: FieldProblem[] | Record<string, unknown> };
}

/** Sends the error shape of docs/api.md ("Errors"). */
export function sendError(reply: FastifyReply, status: number, code: string, message: string, details?: ApiErrorBody['error']['details']) {
  const body: ApiErrorBody = { error: { code, message } };
  if (details !== undefined) body.error.details = details;
  return reply.code(status).send(body);
}

/** Problems listed per error (per job of a batch); the rest are counted. */
export const MAX_PROBLEMS = 20;
/** Longest path or message of one problem, in characters. */
const MAX_PROBLEM_TEXT = 300;

const clip = (s: string) => (s.length > MAX_PROBLEM_TEXT ? `${s.slice(0, MAX_PROBLEM_TEXT)}...` : s);

/**
 * The first `max` problems, each clipped, and one line counting the rest: an answer stays small
 * however many fields a request got wrong (a 1 MB body of bad fields must not become 40 MB of errors).
 */
export function boundProblems(problems: readonly FieldProblem[], max = MAX_PROBLEMS): FieldProblem[] {
  const out = problems.slice(0, max).map((p) => ({ path: clip(p.path), message: clip(p.message) }));
  if (problems.length > max) out.push({ path: '', message: `${problems.length - max} more problem(s) not listed` });
  return out;
}

/** Problems listed per refused job of a batch, and in the whole batch answer. */
const BATCH_PROBLEMS_PER_JOB = 5;
const BATCH_PROBLEMS_TOTAL = 500;

/** Each refused job lists a few problems; past the batch's cap, refused jobs say so without details. */
export function boundBatchErrors(results: EnqueueManyItem[]): EnqueueManyItem[] {
  let listed = 0;
  return results.map((r) => {
    if (!('error' in r)) return r;
    const problems = r.error.details;
    if (listed >= BATCH_PROBLEMS_TOTAL) {
      const message = `${r.error.message.split(':')[0] ?? 'invalid job'}: ${problems.length} problem(s), not listed (a batch answer lists ${BATCH_PROBLEMS_TOTAL} at most)`;
      return { error: { code: r.error.code, message, details: [] } };
    }
    const details = boundProblems(problems, BATCH_PROBLEMS_PER_JOB);
    listed += details.length;
    return { error: { ...r.error, details } };
  });
}
