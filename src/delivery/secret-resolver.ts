import { readFile } from 'node:fs/promises';
import type { SecretRef } from '../actions/action-schema.js';
import { AuthError } from '../errors/errors.js';

export interface SecretResolver {
  /** Resolves a reference at call time; throws AuthError naming the reference when it cannot. */
  resolve(ref: SecretRef): Promise<string>;
  /** Replaces every secret value resolved so far with "***". */
  redact(text: string): string;
  /** Adds a value obtained at run time (an access token) to what `redact` masks. */
  remember(value: string): void;
}

export interface SecretResolverOptions {
  env?: NodeJS.ProcessEnv;
  readSecretFile?: (path: string) => Promise<string>;
  /** How long a file's content is reused before it is read again. @defaultValue 30000 */
  fileTtlMs?: number;
  now?: () => number;
}

export const MASK = '***';
const MAX_REMEMBERED = 2000;

export function createSecretResolver(opts: SecretResolverOptions = {}): SecretResolver {
  const env = opts.env ?? process.env;
  const read = opts.readSecretFile ?? ((p: string) => readFile(p, 'utf8'));
  const ttl = opts.fileTtlMs ?? 30_000;
  const now = opts.now ?? Date.now;
  const files = new Map<string, { value: string; at: number }>();
  // Values seen, longest first when redacting, so a secret that contains another is masked whole.
  const seen = new Set<string>();
  let ordered: string[] = [];

  const remember = (value: string) => {
    if (value.length < 4) return value;
    if (seen.has(value)) {
      // Used again: move it to the newest end, so eviction takes values no longer in use.
      seen.delete(value);
      seen.add(value);
      return value;
    }
    seen.add(value);
    // Tokens rotate for as long as the process lives: keep the most recently used values, a bounded set.
    if (seen.size > MAX_REMEMBERED) seen.delete(seen.values().next().value as string);
    ordered = [...seen].sort((a, b) => b.length - a.length);
    return value;
  };

  return {
    async resolve(ref) {
      if ('env' in ref) {
        const value = env[ref.env];
        if (value === undefined || value === '') throw new AuthError(`secret env ${ref.env} is not set`);
        return remember(value);
      }
      const cached = files.get(ref.file);
      if (cached && now() - cached.at < ttl) return cached.value;
      let value: string;
      try {
        value = (await read(ref.file)).trim();
      } catch (err: unknown) {
        const code = (err as NodeJS.ErrnoException).code ?? 'unknown';
        throw new AuthError(`secret file ${ref.file} cannot be read (${code})`);
      }
      files.set(ref.file, { value, at: now() });
      return remember(value);
    },
    remember(value) {
      remember(value);
    },
    redact(text) {
      let out = text;
      for (const s of ordered) if (out.includes(s)) out = out.split(s).join(MASK);
      return out;
    },
  };
}
