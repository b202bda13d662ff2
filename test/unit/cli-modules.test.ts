import { describe, expect, it } from 'vitest';
import { packagesLoadedBy } from '../support/loaded-packages.js';

const root = new URL('../../', import.meta.url);
/** What a module of src/ loads, run from its TypeScript source. */
const loadedBy = (path: string, exportName: string) =>
  packagesLoadedBy(new URL(path, root), exportName, { cwd: root, nodeArgs: ['--import', 'tsx'] });

describe('the CLI loads each command’s modules when it runs', () => {
  it('building the CLI (every command a worker process registers) loads neither the HTTP API nor the console', async () => {
    const withApi = await loadedBy('src/cli/run-api.ts', 'runApi');
    // The check sees fastify when it is loaded: otherwise the next assertion could not fail.
    expect(withApi).toContain('fastify');
    const cli = await loadedBy('src/cli/cli.ts', 'buildCli');
    expect(cli).not.toContain('fastify');
    expect(cli).not.toContain('@bull-board/fastify');
    // Redis's client is loaded by the CLI's own modules: the list is of this run, not empty.
    expect(cli).toContain('ioredis');
  });
});
