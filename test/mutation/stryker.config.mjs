// Mutation testing of the policy modules (`npm run mutate`; one file: `npm run mutate -- --mutate src/delivery/rate-limiter.ts`).
// Too slow for CI on 2 cores; the scores per module are kept in docs/testing.md.
/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: 'vitest',
  vitest: { configFile: 'test/mutation/vitest.config.ts', related: true },
  coverageAnalysis: 'perTest',
  mutate: [
    'src/delivery/retry-policy.ts',
    'src/delivery/rate-limiter.ts',
    'src/delivery/circuit-breaker.ts',
    'src/delivery/auth.ts',
    'src/delivery/secret-resolver.ts',
    'src/delivery/egress-guard.ts',
    'src/actions/template.ts',
    'src/actions/param-validator.ts',
    'src/delivery/attempt/decide-outcome.ts',
  ],
  // The Redis-backed policy tests share one Redis; two runners at a time fit 2 cores.
  concurrency: 2,
  timeoutMS: 20000,
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation/mutation.html' },
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  tempDirName: '.stryker-tmp',
  cleanTempDir: true,
  thresholds: { high: 90, low: 80, break: null },
};
