import { readdir, readFile, stat } from 'node:fs/promises';
import { extname, join, sep } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ValidationError } from '../errors/errors.js';
import { CYCLE_PROBLEM, findCycle, type ActionStore } from './action-store.js';

export interface ActionFile {
  path: string;
  /** The raw document; validated when it is stored. */
  definition: unknown;
}

const EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

/** The action files of a target: itself, or every .yaml/.yml/.json file of a folder (sorted by name). */
async function actionFilePaths(target: string): Promise<string[]> {
  const info = await stat(target);
  return info.isDirectory()
    ? (await readdir(target))
        .filter((f) => EXTENSIONS.has(extname(f).toLowerCase()))
        .sort()
        .map((f) => join(target, f))
    : [target];
}

/**
 * The documents of one action file (a YAML or JSON list holds several); a ValidationError when it
 * cannot be parsed, or holds itself through a YAML alias to a parent (which no JSON can hold).
 */
async function readActionFile(path: string): Promise<ActionFile[]> {
  const text = await readFile(path, 'utf8');
  let doc: unknown;
  try {
    doc = extname(path).toLowerCase() === '.json' ? JSON.parse(text) : parseYaml(text);
  } catch (err: unknown) {
    throw new ValidationError(`cannot parse ${path}`, [{ path: '', message: (err as Error).message }]);
  }
  // Aliases to other nodes are fine (yaml's maxAliasCount bounds their expansion); a cycle is refused here, naming the field.
  const cycle = findCycle(doc);
  if (cycle !== null) throw new ValidationError(`invalid action definition in ${path}`, [{ path: cycle, message: CYCLE_PROBLEM }]);
  return (Array.isArray(doc) ? doc : [doc]).map((d) => ({ path, definition: d as unknown }));
}

/** A file that cannot be read as actions (it does not parse, or holds itself), with its problems. */
export interface RefusedFile {
  file: string;
  error: ValidationError;
}

/** The documents of one action file or of every .yaml/.yml/.json file of a folder; a file that cannot be read as actions is set aside. */
export async function readActionFiles(target: string): Promise<{ files: ActionFile[]; refused: RefusedFile[] }> {
  const files: ActionFile[] = [];
  const refused: RefusedFile[] = [];
  for (const path of await actionFilePaths(target)) {
    try {
      files.push(...(await readActionFile(path)));
    } catch (err: unknown) {
      if (!(err instanceof ValidationError)) throw err;
      refused.push({ file: path, error: err });
    }
  }
  return { files, refused };
}

/** Reads one action file, or every .yaml/.yml/.json file of a folder (sorted by name). */
export async function loadActionFiles(target: string): Promise<ActionFile[]> {
  const out: ActionFile[] = [];
  for (const path of await actionFilePaths(target)) out.push(...(await readActionFile(path)));
  return out;
}

/** What applying ACTIONS_DIR did. */
export interface ActionsDirReport {
  /** Saved as a new version (created or changed). */
  applied: { id: string; version: number; file: string }[];
  /** Already stored as the file says: no new version. */
  unchanged: string[];
  /** Were managed by a file of the folder that no longer defines them: editable through the API again. */
  released: string[];
  /** Refused files, each with its problems. */
  refused: RefusedFile[];
}

/**
 * Applies ACTIONS_DIR (an absolute folder: resolve it once at start): each action it defines is
 * saved as managed by its file (a new version only when it changed), and an action a file of the
 * folder managed before but defines no longer is handed back to the API. A refused file is
 * reported, never half applied; the other files are applied.
 */
export async function applyActionsDir(store: ActionStore, dir: string): Promise<ActionsDirReport> {
  const { files, refused } = await readActionFiles(dir);
  const report: ActionsDirReport = { applied: [], unchanged: [], released: [], refused };
  const defined = new Set<string>();
  for (const f of files) {
    try {
      const saved = await store.put(f.definition, { fromFile: f.path });
      defined.add(saved.id);
      if (saved.unchanged) report.unchanged.push(saved.id);
      else report.applied.push({ id: saved.id, version: saved.version, file: f.path });
    } catch (err: unknown) {
      if (!(err instanceof ValidationError)) throw err;
      report.refused.push({ file: f.path, error: err });
      const id = (f.definition as { id?: unknown } | null)?.id;
      // Still the folder's: a refused file keeps its action managed (and unchanged).
      if (typeof id === 'string') defined.add(id);
    }
  }
  const inside = dir.endsWith(sep) ? dir : `${dir}${sep}`;
  const unreadable = new Set(report.refused.map((r) => r.file));
  for (const a of await store.list()) {
    const file = a.managedBy;
    if (file?.startsWith(inside) && !unreadable.has(file) && !defined.has(a.definition.id)) {
      try {
        await store.put(a.definition, { fromFile: '' });
        report.released.push(a.definition.id);
      } catch (err: unknown) {
        // A stored definition the schema no longer takes: reported under its gone file, not retried.
        if (!(err instanceof ValidationError)) throw err;
        report.refused.push({ file, error: err });
      }
    }
  }
  return report;
}
