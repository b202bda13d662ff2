import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { formatIssues } from '../actions/param-validator.js';

/** What an API token may do; `admin` opens everything. */
export const SCOPES = ['enqueue', 'read', 'replay', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

/** One entry of API_TOKENS_FILE: the token itself is never stored, only its SHA-256. */
export const apiTokenSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9_.@-]{1,64}$/, 'letters, digits, _ . @ -, at most 64'),
  sha256: z
    .string()
    .regex(/^[0-9a-fA-F]{64}$/, 'the hex SHA-256 of the token (64 hex digits)')
    .transform((h) => h.toLowerCase()),
  scopes: z.array(z.enum(SCOPES)).min(1),
});
export type ApiToken = z.infer<typeof apiTokenSchema>;

/** Name under which ADMIN_TOKEN appears in audit lines (and its console session): no file token may take it. */
export const ADMIN_TOKEN_NAME = 'ADMIN_TOKEN';

export const tokensFileSchema = z.strictObject({
  tokens: z
    .array(apiTokenSchema)
    .min(1)
    .superRefine((tokens, ctx) => {
      const names = new Set<string>();
      const digests = new Set<string>();
      tokens.forEach((t, i) => {
        if (names.has(t.name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `the name "${t.name}" is used twice` });
        // A session cookie names its token: a file token named so would sign in with ADMIN_TOKEN's scopes.
        if (t.name === ADMIN_TOKEN_NAME)
          ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `the name "${ADMIN_TOKEN_NAME}" is reserved` });
        if (digests.has(t.sha256)) ctx.addIssue({ code: 'custom', path: [i, 'sha256'], message: 'the same token twice' });
        names.add(t.name);
        digests.add(t.sha256);
      });
    }),
});

/** Hex SHA-256 of a token, as API_TOKENS_FILE holds it. */
export const tokenDigest = (token: string): string => createHash('sha256').update(token).digest('hex');

/** Parses the text of an API_TOKENS_FILE (YAML, of which JSON is a subset); errors name the field. */
export function parseTokensFile(text: string): ApiToken[] {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err: unknown) {
    throw new Error(`API_TOKENS_FILE: not YAML or JSON (${(err as Error).message.split('\n')[0] ?? ''})`);
  }
  const parsed = tokensFileSchema.safeParse(doc);
  if (!parsed.success) {
    const problems = formatIssues(parsed.error, '', doc).map((p) => `${p.path || '(file)'}: ${p.message}`);
    throw new Error(`API_TOKENS_FILE: ${problems.join('; ')}`);
  }
  return parsed.data.tokens;
}

/** Reads API_TOKENS_FILE; a missing or malformed file stops the process with a message naming the variable. */
export async function loadTokensFile(path: string): Promise<ApiToken[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err: unknown) {
    throw new Error(`API_TOKENS_FILE: ${path} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  return parseTokensFile(text);
}

/** The tokens of a process: those of API_TOKENS_FILE, plus ADMIN_TOKEN with every scope. */
export function tokenTable(fileTokens: readonly ApiToken[], adminToken: string | undefined): ApiToken[] {
  const all = [...fileTokens];
  if (adminToken) all.push({ name: ADMIN_TOKEN_NAME, sha256: tokenDigest(adminToken), scopes: [...SCOPES] });
  return all;
}
