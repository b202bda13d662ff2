import { defineConfig } from 'vitest/config';

// The tests that judge the policy modules under mutation: every unit test, and the Redis tests of
// the policy scripts and of delivery decisions (a Redis is found or started once).
export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts', 'test/integration/policy-scripts.redis.test.ts'],
    exclude: ['dist/**', 'node_modules/**'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
