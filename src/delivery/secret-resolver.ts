import { readFile } from 'node:fs/promises';
import type { SecretRef } from '../actions/action-schema.js';
import { DEFAULT_SECRETS_ENV_PREFIX, realSecretPath, secretRefProblem } from '../actions/secret-references.js';
import { AuthError } from '../errors/errors.js';

export interface SecretResolver {
  /**
   * Resolves a reference at call time, under the policy (SECRETS_ENV_PREFIX, SECRETS_DIR) again:
   * a definition may predate it. Throws AuthError "secret <field> is not available" when it cannot,
   * never saying whether a variable or file exists.
   */
  resolve(ref: SecretRef, field?: string): Promise<string>;
  /** Replaces every secret value resolved so far with "***", and the start of one that ends the text (cut by a length limit). */
  redact(text: string): string;
  /**
   * Replaces every whole secret value resolved so far with "***": for a text never cut short (a
   * value parsed out of JSON), where the end matching a secret's first characters is chance.
   */
  redactWhole(text: string): string;
  /** Adds a value obtained at run time (an access token) to what `redact` masks. */
  remember(value: string): void;
}

export interface SecretResolverOptions {
  env?: NodeJS.ProcessEnv;
  /** What an `{ env }` reference must start with (SECRETS_ENV_PREFIX). @defaultValue ACTION_SECRET_ */
  envPrefix?: string;
  /** The folder `{ file }` references are read from (SECRETS_DIR); unset: none are. */
  dir?: string | undefined;
  readSecretFile?: (path: string) => Promise<string>;
  /** How long a file's content is reused before it is read again. @defaultValue 30000 */
  fileTtlMs?: number;
  now?: () => number;
}

export const MASK = '***';
const MAX_REMEMBERED = 2000;
/** A shorter secret is refused: masking it would mask common words, and a short one is guessable anyway. */
export const MIN_SECRET_LENGTH = 8;
/** A text ending with this many characters of a secret's start has it masked: the text may have been cut inside it. */
const MIN_CUT_HEAD = 3;

const unicodeEscape = (c: string) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
/** Go's encoding/json form of a JSON string's content: & < > U+2028 U+2029 also written as \uXXXX. */
const goEscaped = (json: string) => json.replace(/[&<>\u2028\u2029]/g, unicodeEscape);
/** An ASCII-only JSON encoder's form (Python's json.dumps, PHP's json_encode): every other character as \uXXXX. */
const asciiEscaped = (json: string) => json.replace(/[^\x20-\x7e]/g, unicodeEscape);

/**
 * The forms a third party may echo a value back in: as it is, and as JSON encoders write it in a
 * string (JSON.stringify; "/" escaped as PHP and some others do; Go's escaping of & < >; ASCII-only
 * as Python and PHP write it; Go's and ASCII-only together).
 */
function echoForms(value: string): string[] {
  const json = JSON.stringify(value).slice(1, -1);
  const ascii = asciiEscaped(json);
  return [...new Set([value, json, json.replaceAll('/', '\\/'), goEscaped(json), ascii, ascii.replaceAll('/', '\\/'), goEscaped(ascii)])];
}

/**
 * The secret values seen so far (and their JSON-escaped forms), a bounded set kept in the order of
 * last use, and the masking of them in any text.
 */
function secretMemory(): { remember(value: string): string; redact(text: string): string; redactWhole(text: string): string } {
  // Values seen, in the order of last use, each with its echoed forms (computed once, when first seen).
  const seen = new Map<string, readonly string[]>();
  // Every form of the values seen, with how many values have it (two values may share a form).
  const forms = new Map<string, number>();
  let formCount = 0;
  // The forms, longest first when redacting, so a secret that contains another is masked whole.
  let ordered: string[] = [];

  // Secrets by their first MIN_CUT_HEAD characters, to find one cut at the end of a text.
  let heads = new Map<string, string[]>();

  const remember = (value: string) => {
    if (value.length < 4) return value;
    const known = seen.get(value);
    if (known) {
      // Used again: move it to the newest end, so eviction takes values no longer in use.
      seen.delete(value);
      seen.set(value, known);
      return value;
    }
    const added = echoForms(value);
    seen.set(value, added);
    formCount += added.length;
    for (const form of added) forms.set(form, (forms.get(form) ?? 0) + 1);
    // Tokens rotate for as long as the process lives: keep the most recently used values, a bounded set of forms.
    for (const [oldest, oldForms] of seen) {
      if (formCount <= MAX_REMEMBERED || oldest === value) break;
      seen.delete(oldest);
      formCount -= oldForms.length;
      for (const form of oldForms) {
        const left = (forms.get(form) ?? 1) - 1;
        if (left > 0) forms.set(form, left);
        else forms.delete(form);
      }
    }
    ordered = [...forms.keys()].sort((a, b) => b.length - a.length);
    heads = new Map();
    for (const s of ordered) {
      const head = s.slice(0, MIN_CUT_HEAD);
      const list = heads.get(head);
      if (list) list.push(s);
      else heads.set(head, [s]);
    }
    return value;
  };

  /** The text with a secret cut at its very end (the first characters of one, up to the end) masked. */
  const maskCutTail = (text: string, longest: number): string => {
    for (let at = Math.max(0, text.length - longest + 1); at <= text.length - MIN_CUT_HEAD; at++) {
      const candidates = heads.get(text.slice(at, at + MIN_CUT_HEAD));
      if (!candidates) continue;
      // A cut inside a multi-byte UTF-8 character was decoded as U+FFFD: compare what precedes it.
      const whole = text.slice(at);
      const tail = whole.replace(/\uFFFD+$/, '');
      const cutInChar = tail.length < whole.length;
      const cutHere = (s: string) => s.length > tail.length && s.startsWith(tail) && (!cutInChar || s.charCodeAt(tail.length) > 0x7f);
      if (candidates.some(cutHere)) return text.slice(0, at) + MASK;
    }
    return text;
  };

  const redactWhole = (text: string): string => {
    let out = text;
    for (const s of ordered) if (out.includes(s)) out = out.split(s).join(MASK);
    return out;
  };

  return {
    remember,
    redactWhole,
    redact(text) {
      const out = redactWhole(text);
      const longest = ordered[0]?.length ?? 0;
      return longest > 0 ? maskCutTail(out, longest) : out;
    },
  };
}

export function createSecretResolver(opts: SecretResolverOptions = {}): SecretResolver {
  const env = opts.env ?? process.env;
  const read = opts.readSecretFile ?? ((p: string) => readFile(p, 'utf8'));
  const policy = { envPrefix: opts.envPrefix ?? DEFAULT_SECRETS_ENV_PREFIX, dir: opts.dir };
  const ttl = opts.fileTtlMs ?? 30_000;
  const now = opts.now ?? Date.now;
  const files = new Map<string, { value: string; at: number }>();
  const memory = secretMemory();
  const remember = memory.remember;

  const unavailable = (field: string | undefined) => new AuthError(`secret ${field ?? 'reference'} is not available`);
  const checked = (value: string, field: string | undefined) => {
    if (value.length < MIN_SECRET_LENGTH) {
      throw new AuthError(`secret ${field ?? 'reference'} is shorter than ${MIN_SECRET_LENGTH} characters: too short to be masked safely`);
    }
    return remember(value);
  };

  return {
    async resolve(ref, field) {
      if (secretRefProblem(ref, policy) !== undefined) throw unavailable(field);
      if ('env' in ref) {
        const value = env[ref.env];
        if (value === undefined || value === '') throw unavailable(field);
        return checked(value, field);
      }
      const cached = files.get(ref.file);
      // Remembered again at each use, as env secrets are: it stays among the most recently used values.
      if (cached && now() - cached.at < ttl) return remember(cached.value);
      // The real path again at use: a symlink placed after the save cannot lead outside SECRETS_DIR.
      const real = await realSecretPath(ref.file, policy.dir);
      if (real === undefined || real === 'missing') throw unavailable(field);
      let value: string;
      try {
        value = (await read(real)).trim();
      } catch {
        throw unavailable(field);
      }
      checked(value, field);
      files.set(ref.file, { value, at: now() });
      return value;
    },
    remember(value) {
      remember(value);
    },
    redact: memory.redact,
    redactWhole: memory.redactWhole,
  };
}
