import type { RenderScope } from '../../actions/template.js';
import { InvalidParamsError, UnknownActionError, ValidationError } from '../../errors/errors.js';
import { readJobData } from '../../queue/job-schema.js';
import type { Attempt, LoadedAttempt, PipelineContext } from './attempt.js';

/** Step 1: the job's data, its compiled action and validated params. Bad input throws an error that dead-letters. */
export async function load(ctx: PipelineContext, attempt: Attempt): Promise<LoadedAttempt> {
  const { job } = attempt;
  const parsed = readJobData(job.data);
  if (!parsed.ok) throw new InvalidParamsError([{ path: parsed.path, message: 'malformed job data' }]);
  const data = parsed.value;
  attempt.data = data;
  let action;
  try {
    action = await ctx.store.getCompiled(job.name);
  } catch (err: unknown) {
    if (err instanceof ValidationError) throw new UnknownActionError(`${job.name} (stored definition is invalid: ${err.message})`);
    throw err;
  }
  if (!action) throw new UnknownActionError(job.name);
  attempt.action = action;
  ctx.events.emit('loaded', { actionId: action.id, jobId: attempt.jobId });
  const checked = action.validateParams(data.params);
  if (!checked.ok) throw new InvalidParamsError(checked.problems);
  const scope: RenderScope = {
    params: checked.value,
    context: data.context,
    job: { id: attempt.jobId, attempt: attempt.number, idempotencyKey: data.idempotencyKey ?? attempt.jobId },
  };
  attempt.scope = scope;
  return attempt as LoadedAttempt;
}
