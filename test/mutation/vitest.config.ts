import { defineConfig } from 'vitest/config';

// The tests that judge the policy modules under mutation: the unit tests that reach them (through
// compile-action for templates and parameters), and the Redis test of the policy scripts (a Redis
// is found or started once). Tests of unrelated modules stay out: a mutant of a module's top-level
// code (a table, a constant) is run against every test, so each extra file slows every such mutant.
// Property tests try PROPERTY_RUNS cases instead of hundreds, and stop at the first failure
// without shrinking it: a mutant needs to be seen failing, not explained.
export default defineConfig({
  test: {
    include: [
      'test/unit/action-definition.property.test.ts',
      'test/unit/auth.test.ts',
      'test/unit/backoff.test.ts',
      'test/unit/decide-outcome.test.ts',
      'test/unit/egress-guard.test.ts',
      'test/unit/egress-guard-edges.test.ts',
      'test/unit/input-hardening.test.ts',
      'test/unit/journey-parity.test.ts',
      'test/unit/param-validator.property.test.ts',
      'test/unit/param-validator.test.ts',
      'test/unit/params-and-templates.test.ts',
      'test/unit/path-values.test.ts',
      'test/unit/retry-policy.test.ts',
      'test/unit/secret-resolver.test.ts',
      'test/unit/template-render.property.test.ts',
      'test/unit/template.test.ts',
      'test/integration/policy-scripts.redis.test.ts',
    ],
    exclude: ['dist/**', 'node_modules/**'],
    env: { PROPERTY_RUNS: '25' },
    setupFiles: ['test/mutation/fast-check-setup.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
