import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['dist/**', 'node_modules/**'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // 2 cores, and the end-to-end tests measure rates with worker processes of their own:
    // one file at a time keeps them from skewing each other.
    fileParallelism: false,
  },
});
