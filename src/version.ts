import { readFileSync } from 'node:fs';

function readVersion(): string {
  // package.json sits two levels above both src/ and dist/src/.
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'action-relay' && pkg.version) return pkg.version;
    } catch {
      // try the next location
    }
  }
  return '0.0.0';
}

export const VERSION = readVersion();
export const USER_AGENT = `action-relay/${VERSION}`;
