import { mkdtempSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createSecretResolver, MASK } from '../../src/delivery/secret-resolver.js';
import { AuthError } from '../../src/errors/errors.js';
import { lexicalSecretPath, secretRefProblem } from '../../src/actions/secret-references.js';

const root = mkdtempSync(join(tmpdir(), 'relay-secrets-'));
const dir = join(root, 'secrets');
mkdirSync(join(dir, 'nested'), { recursive: true });
writeFileSync(join(dir, 'api-key'), 'inside-secret-value\n');
writeFileSync(join(dir, 'nested', 'token'), 'nested-secret-value');
writeFileSync(join(dir, 'short'), 'abc');
writeFileSync(join(root, 'outside'), 'outside-secret-value');
symlinkSync(join(root, 'outside'), join(dir, 'escape'));
symlinkSync(join(dir, 'api-key'), join(dir, 'alias'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const env = { ACTION_SECRET_KEY: 'env-secret-value', ACTION_SECRET_SHORT: 'seven77', HOME_PASSWORD: 'relay-own-password' };
const resolver = () => createSecretResolver({ env, dir });

async function refusal(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AuthError);
  return (err as AuthError).message;
}

describe('resolving under the policy', () => {
  it('resolves an env reference with the prefix, and files inside SECRETS_DIR (relative, absolute, through an inner symlink)', async () => {
    const r = resolver();
    expect(await r.resolve({ env: 'ACTION_SECRET_KEY' }, 'auth.token')).toBe('env-secret-value');
    expect(await r.resolve({ file: 'api-key' }, 'auth.value')).toBe('inside-secret-value');
    expect(await r.resolve({ file: 'nested/token' }, 'auth.value')).toBe('nested-secret-value');
    expect(await r.resolve({ file: join(dir, 'nested/../api-key') }, 'auth.value')).toBe('inside-secret-value');
    expect(await r.resolve({ file: 'alias' }, 'auth.value')).toBe('inside-secret-value');
  });

  it.each([
    [{ env: 'HOME_PASSWORD' }, 'a variable without the prefix'],
    [{ env: 'ACTION_SECRET_UNSET' }, 'an unset variable'],
    [{ file: 'escape' }, 'a symlink leading out of SECRETS_DIR'],
    [{ file: '../outside' }, 'a relative path climbing out'],
    [{ file: join(root, 'outside') }, 'an absolute path outside'],
    [{ file: '/proc/self/environ' }, "the process's environment"],
    [{ file: 'absent' }, 'a missing file'],
    [{ file: '.' }, 'SECRETS_DIR itself'],
    [{ file: 'nested' }, 'a folder'],
  ])('%j (%s) is "secret <field> is not available", saying no more', async (ref, _what) => {
    expect(await refusal(resolver().resolve(ref, 'auth.request.body.client_secret'))).toBe(
      'secret auth.request.body.client_secret is not available',
    );
  });

  it('refuses every file reference without SECRETS_DIR', async () => {
    const r = createSecretResolver({ env });
    expect(await refusal(r.resolve({ file: join(dir, 'api-key') }, 'tls.ca'))).toBe('secret tls.ca is not available');
  });

  it('a secret shorter than 8 characters is an auth error: it could not be masked safely', async () => {
    expect(await refusal(resolver().resolve({ env: 'ACTION_SECRET_SHORT' }, 'auth.token'))).toMatch(
      /^secret auth.token is shorter than 8 characters/,
    );
    expect(await refusal(resolver().resolve({ file: 'short' }, 'signing.secrets[0]'))).toMatch(/^secret signing.secrets\[0\] is shorter/);
  });

  it('follows a custom SECRETS_ENV_PREFIX', async () => {
    const r = createSecretResolver({ env: { RELAY_KEY_A: 'custom-prefix-value' }, envPrefix: 'RELAY_KEY_' });
    expect(await r.resolve({ env: 'RELAY_KEY_A' }, 'auth.token')).toBe('custom-prefix-value');
    expect(secretRefProblem({ env: 'ACTION_SECRET_A' }, { envPrefix: 'RELAY_KEY_' })).toMatch(/starting with RELAY_KEY_/);
  });

  it('reads paths by spelling first: nothing outside is touched', () => {
    expect(lexicalSecretPath('a/../../b', dir)).toBeUndefined();
    expect(lexicalSecretPath('a\0b', dir)).toBeUndefined();
    expect(lexicalSecretPath('..', dir)).toBeUndefined();
    expect(lexicalSecretPath('..a', dir)).toBe(join(dir, '..a'));
    expect(lexicalSecretPath('x', undefined)).toBeUndefined();
  });
});

describe('redaction', () => {
  it('masks the JSON-escaped forms of a secret, as an echoing third party returns them', async () => {
    const r = createSecretResolver({ env: { ACTION_SECRET_Q: 'quote"back\\slash/slash-42' } });
    const secret = await r.resolve({ env: 'ACTION_SECRET_Q' }, 'auth.token');
    const echoed = JSON.stringify({ got: secret });
    expect(echoed).not.toContain(secret);
    expect(r.redact(echoed)).toBe(`{"got":"${MASK}"}`);
    expect(r.redact(echoed.replaceAll('/', '\\/'))).toBe(`{"got":"${MASK}"}`);
  });

  it('masks a secret cut at the end of a text (the 4 KiB a record keeps), however little of it is left', async () => {
    const r = resolver();
    const secret = await r.resolve({ env: 'ACTION_SECRET_KEY' }, 'auth.token');
    for (let keep = 3; keep < secret.length; keep++) {
      const text = `${'p'.repeat(4096 - keep)}${secret.slice(0, keep)}`;
      expect(r.redact(text), `${keep} characters kept`).toBe(`${'p'.repeat(4096 - keep)}${MASK}`);
    }
    expect(r.redact(`head ${secret} tail`)).toBe(`head ${MASK} tail`);
    // Two characters in common with a secret's start are not a secret.
    expect(r.redact('status en')).toBe('status en');
  });
});
