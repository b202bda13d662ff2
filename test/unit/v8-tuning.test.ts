import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { PRETENURING_FLAG, REDUCER_FAVORS_MEMORY_FLAG, tuneV8ForDelivery, turnOffUnlessNamed } from '../../src/cli/v8-tuning.js';

describe('tuneV8ForDelivery', () => {
  const run = (execArgv: string[]) => {
    const set: string[] = [];
    const applied = tuneV8ForDelivery(execArgv, (flags) => set.push(flags));
    return { applied, set };
  };

  it('turns allocation-site pretenuring off when node was started without the flag', () => {
    expect(run([])).toEqual({ applied: true, set: ['--no-allocation-site-pretenuring'] });
    expect(run(['--enable-source-maps', '--max-semi-space-size=16'])).toEqual({ applied: true, set: ['--no-allocation-site-pretenuring'] });
  });

  it("leaves an operator's choice on node's command line as it is", () => {
    expect(run([`--${PRETENURING_FLAG}`])).toEqual({ applied: false, set: [] });
    expect(run(['--enable-source-maps', `--no-${PRETENURING_FLAG}`])).toEqual({ applied: false, set: [] });
  });

  it("turns any other flag off the same way (the bench turns the memory reducer's compaction off)", () => {
    const set: string[] = [];
    expect(turnOffUnlessNamed(REDUCER_FAVORS_MEMORY_FLAG, ['--enable-source-maps'], (f) => set.push(f))).toBe(true);
    expect(turnOffUnlessNamed(REDUCER_FAVORS_MEMORY_FLAG, [`--${REDUCER_FAVORS_MEMORY_FLAG}`], (f) => set.push(f))).toBe(false);
    expect(set).toEqual(['--no-memory-reducer-favors-memory']);
  });

  it('names flags that this V8 has (an unknown one would change nothing)', () => {
    const options = execFileSync(process.execPath, ['--v8-options'], { encoding: 'utf8' });
    expect(options).toContain(`--${PRETENURING_FLAG} (`);
    expect(options).toContain(`--${REDUCER_FAVORS_MEMORY_FLAG} (`);
  });
});
