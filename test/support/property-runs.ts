/**
 * How many cases a fast-check property tries: `runs`, or fewer when PROPERTY_RUNS caps it. The
 * mutation run sets the cap (test/mutation/vitest.config.ts): every mutant that a property covers
 * runs the property again, and a few dozen cases still find a broken branch while hundreds make a
 * module's mutation run take an hour. The ordinary test tiers run the full count.
 */
export function propertyRuns(runs: number): number {
  const cap = Number(process.env.PROPERTY_RUNS);
  return Number.isInteger(cap) && cap > 0 ? Math.min(runs, cap) : runs;
}
