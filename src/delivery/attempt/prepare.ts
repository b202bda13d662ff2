import { prepareRequest, prepareWithoutSecrets } from '../prepare-request.js';
import type { LoadedAttempt, PipelineContext } from './attempt.js';

/**
 * Step 3: renders the request, adds credentials and signs it. Run once the job may go: a deferred
 * job costs no token lookup or signature, and a signature's timestamp is the sending time.
 * `rejectedToken` asks for a newer token than the one a 401 refused.
 */
export function prepare(ctx: PipelineContext, attempt: LoadedAttempt, rejectedToken?: string): Promise<void> | undefined {
  const { action, scope } = attempt;
  const plain = prepareWithoutSecrets(action, scope);
  if (plain) {
    attempt.prepared = plain;
    return undefined;
  }
  return prepareRequest(action, scope, {
    secrets: ctx.secrets,
    tokens: ctx.tokens,
    now: ctx.now,
    ...(rejectedToken !== undefined ? { rejectedToken } : {}),
  }).then((prepared) => {
    attempt.prepared = prepared;
  });
}
