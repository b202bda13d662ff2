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

describe('resolving: edges', () => {
  it('an empty variable is not a secret; a reference read without a field name is called "reference"', async () => {
    const r = createSecretResolver({ env: { ACTION_SECRET_EMPTY: '', ACTION_SECRET_TINY: 'seven77' } });
    expect(await refusal(r.resolve({ env: 'ACTION_SECRET_EMPTY' }, 'auth.token'))).toBe('secret auth.token is not available');
    expect(await refusal(r.resolve({ env: 'ACTION_SECRET_UNSET' }))).toBe('secret reference is not available');
    expect(await refusal(r.resolve({ env: 'ACTION_SECRET_TINY' }))).toBe(
      'secret reference is shorter than 8 characters: too short to be masked safely',
    );
  });

  it('eight characters are enough', async () => {
    const r = createSecretResolver({ env: { ACTION_SECRET_EIGHT: '8chars!!' } });
    expect(await r.resolve({ env: 'ACTION_SECRET_EIGHT' }, 'auth.token')).toBe('8chars!!');
  });

  it('a file that is missing or leads outside is never read, whatever the reader would answer', async () => {
    const asked: string[] = [];
    const r = createSecretResolver({
      env,
      dir,
      readSecretFile: (p) => {
        asked.push(p);
        return Promise.resolve('reader-always-answers');
      },
    });
    expect(await refusal(r.resolve({ file: 'absent' }, 'auth.value'))).toBe('secret auth.value is not available');
    expect(await refusal(r.resolve({ file: 'escape' }, 'auth.value'))).toBe('secret auth.value is not available');
    expect(asked).toEqual([]);
    expect(await r.resolve({ file: 'api-key' }, 'auth.value')).toBe('reader-always-answers');
    expect(asked).toEqual([join(dir, 'api-key')]);
  });

  it('a file is read again once fileTtlMs has passed since it was read, not before', async () => {
    let clock = 1_000_000;
    let reads = 0;
    let content = 'first-file-value';
    const r = createSecretResolver({
      env,
      dir,
      fileTtlMs: 1000,
      now: () => clock,
      readSecretFile: () => {
        reads++;
        return Promise.resolve(content);
      },
    });
    expect(await r.resolve({ file: 'api-key' })).toBe('first-file-value');
    content = 'second-file-value';
    clock += 999;
    expect(await r.resolve({ file: 'api-key' })).toBe('first-file-value');
    expect(reads).toBe(1);
    clock += 1;
    expect(await r.resolve({ file: 'api-key' })).toBe('second-file-value');
    expect(reads).toBe(2);
    // The new value's time: kept for another fileTtlMs from this read.
    clock += 999;
    expect(await r.resolve({ file: 'api-key' })).toBe('second-file-value');
    expect(reads).toBe(2);
  });

  it('files are kept 30 s by default', async () => {
    let clock = 5_000;
    let reads = 0;
    const r = createSecretResolver({
      env,
      dir,
      now: () => clock,
      readSecretFile: () => Promise.resolve(`file-value-${++reads}`),
    });
    expect(await r.resolve({ file: 'api-key' })).toBe('file-value-1');
    clock += 29_999;
    expect(await r.resolve({ file: 'api-key' })).toBe('file-value-1');
    clock += 1;
    expect(await r.resolve({ file: 'api-key' })).toBe('file-value-2');
  });
});

describe('redaction: edges', () => {
  it('a resolver that has seen no secret changes nothing', () => {
    expect(createSecretResolver({ env }).redact('plain text, abc')).toBe('plain text, abc');
  });

  it('values of four characters or more are remembered, shorter ones are not', () => {
    const r = createSecretResolver({ env });
    r.remember('abc');
    r.remember('wxyz');
    expect(r.redact('abc wxyz abc')).toBe(`abc ${MASK} abc`);
  });

  it('a secret that contains another is masked whole, whichever was seen first', () => {
    const r = createSecretResolver({ env });
    r.remember('inner-secret');
    r.remember('outer-inner-secret-long');
    r.remember('mid-inner-secret');
    expect(r.redact('a outer-inner-secret-long b mid-inner-secret c inner-secret d')).toBe(`a ${MASK} b ${MASK} c ${MASK} d`);
  });

  it('a cut secret is masked only when the text ends with its start; secrets sharing a start are each looked at', () => {
    const r = createSecretResolver({ env });
    r.remember('abcdefghij');
    r.remember('abcXYZ1234');
    expect(r.redact('ends with abcd')).toBe(`ends with ${MASK}`);
    expect(r.redact('ends with abcXY')).toBe(`ends with ${MASK}`);
    // Same first three characters, then neither secret.
    expect(r.redact('ends with abcQ')).toBe('ends with abcQ');
    expect(r.redact('ends with ab')).toBe('ends with ab');
  });

  it('keeps the 2000 most recently used values: one used again stays, the oldest unused one goes', () => {
    const r = createSecretResolver({ env });
    const value = (i: number) => `value-${String(i).padStart(4, '0')}`;
    for (let i = 0; i < 2000; i++) r.remember(value(i));
    r.remember(value(0));
    r.remember(value(2000));
    expect(r.redact(value(0))).toBe(MASK);
    expect(r.redact(value(1))).toBe(value(1));
    expect(r.redact(value(2))).toBe(MASK);
    expect(r.redact(value(2000))).toBe(MASK);
  });
});

describe('redaction: echoes by other JSON encoders', () => {
  it('masks a secret echoed by a Go server, which escapes & < > U+2028 U+2029 as \\u0026 \\u003c \\u003e \\u2028 \\u2029', async () => {
    const secret = 'k3y&v<al>ue\u2028-9f1e';
    const r = createSecretResolver({ env: { ACTION_SECRET_GO: secret } });
    await r.resolve({ env: 'ACTION_SECRET_GO' }, 'auth.value');
    // What Go's json.Marshal writes for {"error":"invalid key <secret>"}.
    const goEcho = '{"error":"invalid key k3y\\u0026v\\u003cal\\u003eue\\u2028-9f1e"}';
    expect(JSON.parse(goEcho)).toEqual({ error: `invalid key ${secret}` });
    expect(r.redact(goEcho)).toBe(`{"error":"invalid key ${MASK}"}`);
  });

  it('masks a secret echoed by a Python or PHP server, which escape every non-ASCII character as \\uXXXX (PHP "/" as \\/ too)', async () => {
    const secret = 'pässwörd/é-5a7c';
    const r = createSecretResolver({ env: { ACTION_SECRET_PY: secret } });
    await r.resolve({ env: 'ACTION_SECRET_PY' }, 'auth.password');
    // Python's json.dumps({"got": secret}), then PHP's json_encode(["got" => secret]).
    const pyEcho = '{"got": "p\\u00e4ssw\\u00f6rd/\\u00e9-5a7c"}';
    const phpEcho = '{"got":"p\\u00e4ssw\\u00f6rd\\/\\u00e9-5a7c"}';
    expect(JSON.parse(pyEcho)).toEqual({ got: secret });
    expect(JSON.parse(phpEcho)).toEqual({ got: secret });
    expect(r.redact(pyEcho)).toBe(`{"got": "${MASK}"}`);
    expect(r.redact(phpEcho)).toBe(`{"got":"${MASK}"}`);
  });

  it("masks a secret echoed with Go's escaping and ASCII-only escaping together", async () => {
    const secret = 'clé&<tag>-\u{1F511}-77aa';
    const r = createSecretResolver({ env: { ACTION_SECRET_BOTH: secret } });
    await r.resolve({ env: 'ACTION_SECRET_BOTH' }, 'auth.value');
    const echo = '"cl\\u00e9\\u0026\\u003ctag\\u003e-\\ud83d\\udd11-77aa"';
    expect(JSON.parse(echo)).toBe(secret);
    expect(r.redact(echo)).toBe(`"${MASK}"`);
  });
});

describe('redaction: a file secret served from the file cache', () => {
  it('stays masked after more than 2000 newer values (rotating access tokens) went through the bounded set', async () => {
    const r = resolver();
    expect(await r.resolve({ file: 'api-key' }, 'auth.value')).toBe('inside-secret-value');
    for (let i = 0; i < 2100; i++) r.remember(`rotating-access-token-${i}`);
    // The next attempt gets the value from the file cache, sends it, and the third party echoes it.
    expect(await r.resolve({ file: 'api-key' }, 'auth.value')).toBe('inside-secret-value');
    expect(r.redact('invalid key inside-secret-value')).toBe(`invalid key ${MASK}`);
  });
});

describe('redaction: a secret cut inside a multi-byte character', () => {
  it('is masked when the 4 KiB cut of a body falls inside a multi-byte UTF-8 character of the secret (decoded as U+FFFD)', async () => {
    const secret = 'Canary-prefix-visible-é-tail-2b2b';
    const r = createSecretResolver({ env: { ACTION_SECRET_CUT: secret } });
    await r.resolve({ env: 'ACTION_SECRET_CUT' }, 'auth.value');
    // As a record keeps a body: its first 4096 bytes decoded, the cut falling inside "é".
    const body = Buffer.from(`${'p'.repeat(4096 - 23)}${secret}`);
    const kept = body.subarray(0, 4096).toString('utf8');
    expect(kept.endsWith('Canary-prefix-visible-\uFFFD')).toBe(true);
    expect(r.redact(kept)).toBe(`${'p'.repeat(4096 - 23)}${MASK}`);
  });

  it("a U+FFFD after a secret's start where the secret goes on in ASCII is not taken for a cut", async () => {
    const r = createSecretResolver({ env: { ACTION_SECRET_CUT: 'Canary-prefix-ascii-2b2b' } });
    await r.resolve({ env: 'ACTION_SECRET_CUT' }, 'auth.value');
    expect(r.redact('ends with Canary-prefix-\uFFFD')).toBe('ends with Canary-prefix-\uFFFD');
  });
});
