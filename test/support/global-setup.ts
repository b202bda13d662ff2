import { ensureRedis, type EmbeddedRedis } from '../../src/redis/embedded-redis.js';

let redis: EmbeddedRedis | undefined;

/** Uses REDIS_URL (default 127.0.0.1:6379) when it answers, else a private redis-server. */
export async function setup({ provide }: { provide: (key: 'redisUrl', value: string) => void }) {
  redis = await ensureRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  provide('redisUrl', redis.url);
}

export async function teardown() {
  await redis?.stop();
}

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
  }
}
