import type { CompiledAction } from '../../actions/compile-action.js';
import type { RenderScope } from '../../actions/template.js';
import { InvalidParamsError, UnknownActionError, ValidationError } from '../../errors/errors.js';
import { readJobData, type JobData } from '../../queue/job-schema.js';
import type { Attempt, LoadedAttempt, PipelineContext } from './attempt.js';

/**
 * Step 1: the job's data, its compiled action and validated params. Bad input throws an error that
 * dead-letters. With the action cached already (nearly every job), no promise at all.
 */
export function load(ctx: PipelineContext, attempt: Attempt): LoadedAttempt | Promise<LoadedAttempt> {
  const { job } = attempt;
  const parsed = readJobData(job.data);
  if (!parsed.ok) throw new InvalidParamsError([{ path: parsed.path, message: 'malformed job data' }]);
  const data = parsed.value;
  attempt.data = data;
  const cached = ctx.store.compiledNow(job.name);
  if (cached) return withAction(ctx, attempt, data, cached);
  return loadAction(ctx, attempt, data);
}

async function loadAction(ctx: PipelineContext, attempt: Attempt, data: JobData): Promise<LoadedAttempt> {
  const { job } = attempt;
  let action;
  try {
    action = await ctx.store.getCompiled(job.name);
  } catch (err: unknown) {
    if (err instanceof ValidationError) throw new UnknownActionError(`${job.name} (stored definition is invalid: ${err.message})`);
    throw err;
  }
  if (!action) throw new UnknownActionError(job.name);
  return withAction(ctx, attempt, data, action);
}

function withAction(ctx: PipelineContext, attempt: Attempt, data: JobData, action: CompiledAction): LoadedAttempt {
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
