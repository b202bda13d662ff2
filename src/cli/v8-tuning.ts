import { setFlagsFromString } from 'node:v8';

/** V8's flag, as node's command line takes it. */
export const PRETENURING_FLAG = 'allocation-site-pretenuring';

/**
 * Turns off V8's allocation-site pretenuring in a delivery worker process, unless node's command
 * line names the flag (either way: the operator's choice stands). Returns whether it turned it off.
 *
 * Why: a job's objects live for the whole delivery, across its awaits, so under load V8 sees the
 * objects of a few allocation sites survive young-generation collections and starts allocating
 * them in the old generation directly. Those objects then point at each delivery's young objects
 * (the rendered request, undici's request, the answer), and a scavenge keeps whatever an old object
 * points at, dead or alive, until the next full collection: every delivery's objects were copied
 * and promoted. Measured in the bench's worker at 1,000 jobs/s, 0.8 MB survived each scavenge
 * with pretenuring and 0.15 MB without, the pauses fell from about 3 to 1.5 ms, and at saturation
 * the worker used less CPU per delivery (docs/benchmarks.md).
 *
 * V8 reads this flag when it collects and when it compiles an allocation, so setting it when the
 * process starts, before the first delivery, acts as the command-line flag does.
 */
export function tuneV8ForDelivery(
  execArgv: readonly string[] = process.execArgv,
  set: (flags: string) => void = setFlagsFromString,
): boolean {
  return turnOffUnlessNamed(PRETENURING_FLAG, execArgv, set);
}

/** V8's flag, as node's command line takes it: see docs/operations.md. */
export const REDUCER_FAVORS_MEMORY_FLAG = 'memory-reducer-favors-memory';

/** Turns V8's boolean `flag` off unless node's command line names it, either way; returns whether it did. */
export function turnOffUnlessNamed(
  flag: string,
  execArgv: readonly string[] = process.execArgv,
  set: (flags: string) => void = setFlagsFromString,
): boolean {
  if (execArgv.some((arg) => arg === `--${flag}` || arg === `--no-${flag}`)) return false;
  set(`--no-${flag}`);
  return true;
}
