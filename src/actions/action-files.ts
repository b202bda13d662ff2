import { readdir, readFile, stat } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ValidationError } from '../errors/errors.js';

export interface ActionFile {
  path: string;
  /** The raw document; validated when it is stored. */
  definition: unknown;
}

const EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

/** Reads one action file, or every .yaml/.yml/.json file of a folder (sorted by name). */
export async function loadActionFiles(target: string): Promise<ActionFile[]> {
  const info = await stat(target);
  const paths = info.isDirectory()
    ? (await readdir(target))
        .filter((f) => EXTENSIONS.has(extname(f).toLowerCase()))
        .sort()
        .map((f) => join(target, f))
    : [target];
  const out: ActionFile[] = [];
  for (const path of paths) {
    const text = await readFile(path, 'utf8');
    let doc: unknown;
    try {
      doc = extname(path).toLowerCase() === '.json' ? JSON.parse(text) : parseYaml(text);
    } catch (err: unknown) {
      throw new ValidationError(`cannot parse ${path}`, [{ path: '', message: (err as Error).message }]);
    }
    const docs = Array.isArray(doc) ? doc : [doc];
    for (const d of docs) out.push({ path, definition: d });
  }
  return out;
}
