import { realpath } from 'node:fs/promises';
import { isAbsolute, relative, resolve, sep } from 'node:path';
import { isSecretRef, type ActionDefinition, type SecretRef } from './action-schema.js';
import type { FieldProblem } from '../errors/errors.js';

/**
 * Where secret references may point (SECRETS_ENV_PREFIX, SECRETS_DIR). Without it, a token that may
 * save actions could name any variable (`{ env: ADMIN_TOKEN }`) or file (`/proc/self/environ`) of the
 * relay and have it sent to a server of its choosing.
 */
export interface SecretPolicy {
  /** An `{ env }` reference must start with it. @defaultValue ACTION_SECRET_ */
  envPrefix: string;
  /** The folder `{ file }` references are read from; unset: file references are refused. */
  dir?: string | undefined;
}

export const DEFAULT_SECRETS_ENV_PREFIX = 'ACTION_SECRET_';

/** Every secret reference of a definition, with the path of its field (`auth.value`, `signing.secrets[0]`). */
export function secretReferences(def: ActionDefinition): { path: string; ref: SecretRef }[] {
  const out: { path: string; ref: SecretRef }[] = [];
  const auth = def.auth;
  if (auth.type === 'apiKey') out.push({ path: 'auth.value', ref: auth.value });
  if (auth.type === 'basic') out.push({ path: 'auth.password', ref: auth.password });
  if (auth.type === 'bearer') out.push({ path: 'auth.token', ref: auth.token });
  if (auth.type === 'oauth2ClientCredentials') out.push({ path: 'auth.clientSecret', ref: auth.clientSecret });
  if (auth.type === 'customToken') {
    for (const [name, value] of Object.entries(auth.request.headers ?? {})) {
      if (typeof value !== 'string') out.push({ path: `auth.request.headers.${name}`, ref: value });
    }
    const walk = (value: unknown, path: string) => {
      if (isSecretRef(value)) out.push({ path, ref: value });
      else if (Array.isArray(value)) value.forEach((v, i) => walk(v, `${path}[${i}]`));
      else if (value !== null && typeof value === 'object') for (const [k, v] of Object.entries(value)) walk(v, `${path}.${k}`);
    };
    walk(auth.request.body, 'auth.request.body');
  }
  def.signing?.secrets.forEach((ref, i) => out.push({ path: `signing.secrets[${i}]`, ref }));
  for (const part of ['cert', 'key', 'ca'] as const) {
    const ref = def.tls?.[part];
    if (ref) out.push({ path: `tls.${part}`, ref });
  }
  return out;
}

/** Whether `path` is `dir` itself or below it (both absolute, normalized). */
function inside(dir: string, path: string): boolean {
  const rel = relative(dir, path);
  return rel !== '' && !rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel);
}

/**
 * The absolute path of a file reference when it lies inside SECRETS_DIR by its spelling (no
 * filesystem access), else undefined. Relative paths are taken from SECRETS_DIR.
 */
export function lexicalSecretPath(file: string, dir: string | undefined): string | undefined {
  if (!dir || file.includes('\0')) return undefined;
  const root = resolve(dir);
  const path = resolve(root, file);
  return inside(root, path) ? path : undefined;
}

/**
 * The real path of a file reference (symlinks resolved) when it stays inside SECRETS_DIR; undefined
 * when it leaves it; `missing` when the file (or the folder) does not exist.
 */
export async function realSecretPath(file: string, dir: string | undefined): Promise<string | 'missing' | undefined> {
  const path = lexicalSecretPath(file, dir);
  if (path === undefined || dir === undefined) return undefined;
  try {
    const [root, real] = await Promise.all([realpath(dir), realpath(path)]);
    return inside(root, real) ? real : undefined;
  } catch {
    return 'missing';
  }
}

/** Why a reference is outside the policy, by its spelling alone; undefined when it is not. */
export function secretRefProblem(ref: SecretRef, policy: SecretPolicy): string | undefined {
  if ('env' in ref) {
    return ref.env.startsWith(policy.envPrefix)
      ? undefined
      : `only environment variables starting with ${policy.envPrefix} (SECRETS_ENV_PREFIX) may be referenced`;
  }
  if (!policy.dir) return 'file references need SECRETS_DIR, the folder secrets are read from';
  return lexicalSecretPath(ref.file, policy.dir) === undefined ? 'the file must be inside SECRETS_DIR (a path relative to it)' : undefined;
}

/**
 * The save-time check of a definition's secret references: each one outside the policy is a problem
 * naming its field. A file that does not exist yet is accepted (it is checked again at use); one whose
 * real path leaves SECRETS_DIR through a symlink is not.
 */
export async function secretReferenceProblems(def: ActionDefinition, policy: SecretPolicy): Promise<FieldProblem[]> {
  const problems: FieldProblem[] = [];
  for (const { path, ref } of secretReferences(def)) {
    const problem = secretRefProblem(ref, policy);
    if (problem) problems.push({ path, message: problem });
    else if ('file' in ref && (await realSecretPath(ref.file, policy.dir)) === undefined) {
      problems.push({ path, message: 'the file must be inside SECRETS_DIR (a path relative to it)' });
    }
  }
  return problems;
}
