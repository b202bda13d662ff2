import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * Imports `entry` (a file URL) in a fresh node process and lists every package it loaded. A resolve
 * hook (module.registerHooks) sees each import and require, of ESM and CommonJS packages alike.
 * The entry must export a function named `exportName`: an import that went wrong fails the list.
 */
const LIST_PACKAGES = `
import { registerHooks } from 'node:module';
const urls = new Set();
registerHooks({ resolve(specifier, context, next) { const r = next(specifier, context); urls.add(r.url); return r; } });
const [entryUrl, exportName] = process.argv.slice(1);
const entry = await import(entryUrl);
if (typeof entry[exportName] !== 'function') throw new Error('no ' + exportName + ' export');
const packages = new Set();
for (const url of urls) {
  const m = /\\/node_modules\\/((?:@[^/]+\\/)?[^/]+)\\//.exec(url);
  if (m) packages.add(m[1]);
}
process.stdout.write(JSON.stringify([...packages].sort()));
`;

/** The packages `entry` loads, sorted; `nodeArgs` go before the script (e.g. `--import tsx` for a .ts entry). */
export async function packagesLoadedBy(
  entry: URL,
  exportName: string,
  opts: { cwd: URL | string; nodeArgs?: string[] },
): Promise<string[]> {
  const { stdout } = await run(
    process.execPath,
    [...(opts.nodeArgs ?? []), '--input-type=module', '-e', LIST_PACKAGES, entry.href, exportName],
    { cwd: opts.cwd, timeout: 60_000 },
  );
  return JSON.parse(stdout) as string[];
}
