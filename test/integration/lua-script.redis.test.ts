import { randomUUID } from 'node:crypto';
import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { luaScript } from '../../src/redis/lua-script.js';
import { testConfig } from '../support/harness.js';

// Scripts go by their SHA1; the text only when Redis does not hold it yet. These scripts touch no
// key: nothing to clean up but the connection.
const redis = new Redis(testConfig().REDIS_URL);
afterAll(() => redis.quit());

describe('luaScript', () => {
  it('sends the text once when Redis does not hold the script (NOSCRIPT), then goes by its SHA1', async () => {
    // A text no Redis has seen: its first call gets NOSCRIPT.
    const source = `-- ${randomUUID()}\nreturn { KEYS[1], ARGV[1], #ARGV }`;
    const sha = createHash('sha1').update(source).digest('hex');
    expect(await redis.script('EXISTS', sha)).toEqual([0]);
    const script = luaScript(source);
    expect(await script.run(redis, 1, 'k', 'a', 2)).toEqual(['k', 'a', 2]);
    expect(await redis.script('EXISTS', sha)).toEqual([1]);
    expect(await script.run(redis, 1, 'k2', 'b')).toEqual(['k2', 'b', 1]);
  });

  it("passes on a script's own error, whether sent by text or by SHA1", async () => {
    const script = luaScript(`-- ${randomUUID()}\nreturn redis.error_reply('refused: ' .. ARGV[1])`);
    await expect(script.run(redis, 0, 'first')).rejects.toThrow('refused: first');
    await expect(script.run(redis, 0, 'again')).rejects.toThrow('refused: again');
  });
});
