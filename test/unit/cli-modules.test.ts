import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = new URL('../../', import.meta.url);

/** The packages loaded (through node's CommonJS loader, as fastify and its plugins are) once `modules` are imported, in a fresh process. */
async function packagesLoadedBy(modules: string[]): Promise<string[]> {
  const script = `
    import { createRequire } from 'node:module';
    for (const m of ${JSON.stringify(modules.map((m) => new URL(m, root).href))}) await import(m);
    const loaded = Object.keys(createRequire(import.meta.url).cache);
    const names = loaded.flatMap((p) => /\\/node_modules\\/((?:@[^/]+\\/)?[^/]+)\\//.exec(p)?.[1] ?? []);
    process.stdout.write(JSON.stringify([...new Set(names)]));
  `;
  const { stdout } = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: root, timeout: 60_000 });
  return JSON.parse(stdout) as string[];
}

describe('the CLI loads each command’s modules when it runs', () => {
  it('building the CLI (every command a worker process registers) loads neither the HTTP API nor the console', async () => {
    const withApi = await packagesLoadedBy(['src/cli/run-api.ts']);
    // The check sees fastify when it is loaded: otherwise the next assertion could not fail.
    expect(withApi).toContain('fastify');
    const cli = await packagesLoadedBy(['src/cli/cli.ts']);
    expect(cli).not.toContain('fastify');
    expect(cli).not.toContain('@bull-board/fastify');
    // Redis's client is loaded as CommonJS by the CLI's own modules: the list is of this run, not empty.
    expect(cli).toContain('ioredis');
  });
});
