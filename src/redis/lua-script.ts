import { createHash } from 'node:crypto';
import type { RedisClient } from './redis-connection.js';

/** A Lua script sent by its SHA1 (EVALSHA), its text only when the server does not hold it yet. */
export interface LuaScript {
  /** As `redis.eval(script, numberOfKeys, ...keysAndArgs)`. */
  run(redis: RedisClient, numberOfKeys: number, ...keysAndArgs: (string | number)[]): Promise<unknown>;
}

/**
 * EVAL ships the whole text on every call and makes Redis hash it again; on the per-job path that
 * is a kilobyte per delivery for nothing. After a restart or failover the cache is empty: the first
 * call gets NOSCRIPT and sends the text once (EVAL also caches it).
 */
export function luaScript(source: string): LuaScript {
  const sha = createHash('sha1').update(source).digest('hex');
  return {
    // A plain promise chain, not an async function: one promise fewer per call (a call per delivery).
    run(redis, numberOfKeys, ...keysAndArgs) {
      return redis.evalsha(sha, numberOfKeys, ...keysAndArgs).catch((err: unknown) => {
        if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
        return redis.eval(source, numberOfKeys, ...keysAndArgs);
      });
    },
  };
}
