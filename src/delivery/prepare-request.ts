import type { BuiltRequest, CompiledAction } from '../actions/compile-action.js';
import type { RenderScope } from '../actions/template.js';
import { applyAuth, maskHeaders, maskPath, type AuthApplied } from './auth.js';
import type { SecretResolver } from './secret-resolver.js';

export interface PreparedRequest {
  req: BuiltRequest;
  applied: AuthApplied;
}

/** Renders an attempt's request and adds credentials (masked ones with `mask`, for a preview). */
export async function prepareRequest(
  action: CompiledAction,
  scope: RenderScope,
  secrets: SecretResolver,
  mask = false,
): Promise<PreparedRequest> {
  const req = action.buildRequest(scope);
  const applied = await applyAuth(action.definition.auth, req, secrets, mask);
  return { req, applied };
}

/** The request as an answer or a record may show it: credentials masked. */
export function describeRequest(p: PreparedRequest, redact: (s: string) => string) {
  const body = p.req.body === undefined ? undefined : (JSON.parse(redact(p.req.body)) as unknown);
  return {
    method: p.req.method,
    url: redact(p.req.origin + maskPath(p.req.path, p.applied)),
    headers: maskHeaders(p.req.headers, p.applied),
    ...(body !== undefined ? { body } : {}),
  };
}
