import { defineConfig } from 'vitest/config';

/*
 * Three tiers, each runnable alone (`npm run test:unit`, `test:redis`, `test:e2e`; `npm test` runs
 * all): unit tests need nothing, `*.redis.test.ts` a Redis, `*.e2e.test.ts` a Redis and worker
 * processes of their own. A Redis is found or started once (global setup) for the tiers that need it.
 */
export default defineConfig({
  test: {
    exclude: ['dist/**', 'node_modules/**'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // expect.poll gives up after 1 s by default: too short for a browser and a server round trip on
    // a busy 2-core machine. A condition that holds returns at once, so only a failure waits longer.
    expect: { poll: { timeout: 10_000 } },
    // 2 cores, and the end-to-end tests run worker processes of their own and count rates: one
    // file at a time, across the tiers too, keeps them from skewing each other.
    fileParallelism: false,
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['test/**/*.test.ts'],
          exclude: ['test/**/*.redis.test.ts', 'test/**/*.e2e.test.ts', 'dist/**', 'node_modules/**'],
        },
      },
      {
        extends: true,
        test: {
          name: 'redis',
          include: ['test/**/*.redis.test.ts'],
          globalSetup: ['test/support/global-setup.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'e2e',
          include: ['test/**/*.e2e.test.ts'],
          globalSetup: ['test/support/global-setup.ts'],
        },
      },
    ],
  },
});
