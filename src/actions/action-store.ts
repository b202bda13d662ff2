import type { Logger } from 'pino';
import { pastHandshake, type RedisClient, type RelayKeys } from '../redis/redis-connection.js';
import { parseActionDefinition, compileAction, type CompiledAction } from './compile-action.js';
import type { ActionDefinition } from './action-schema.js';
import { ManagedByFilesError, ValidationError, coerceError, type FieldProblem } from '../errors/errors.js';
import { luaScript } from '../redis/lua-script.js';

export interface StoredAction {
  version: number;
  updatedAt: number;
  /** The ACTIONS_DIR file the action comes from: only that file changes it. */
  managedBy?: string;
  definition: ActionDefinition;
}

export interface PutOptions {
  /**
   * Saving from ACTIONS_DIR: the file the definition comes from (`''` to hand a no longer managed
   * action back to the API). Without it, saving a file-managed action throws ManagedByFilesError.
   * Implies `keepUnchanged`.
   */
  fromFile?: string;
  /** A definition equal to the stored one keeps its version (applying files). @defaultValue false: every save is a version */
  keepUnchanged?: boolean;
}

export interface PutResult {
  id: string;
  version: number;
  created: boolean;
  /** The stored definition was already this one and `keepUnchanged` was asked: no new version. */
  unchanged: boolean;
}

export interface ActionStore {
  /** Validates and saves a definition; the version grows by one on every save (unless `keepUnchanged` and unchanged). */
  put(input: unknown, opts?: PutOptions): Promise<PutResult>;
  /** The checks of `put` without saving: the parsed definition, or a ValidationError with every problem. */
  validate(input: unknown): Promise<ActionDefinition>;
  get(id: string): Promise<StoredAction | null>;
  list(): Promise<StoredAction[]>;
  /** Throws ManagedByFilesError for a file-managed action unless `fromFiles`. */
  delete(id: string, opts?: { fromFiles?: boolean }): Promise<boolean>;
  /** The compiled action, cached until a change is published. */
  getCompiled(id: string): Promise<CompiledAction | null>;
  /** What getCompiled would resolve to when it is cached and loaded already; undefined otherwise (no promise, no call). */
  compiledNow(id: string): CompiledAction | undefined;
  /** Subscribes to changes so that cached actions are dropped within moments of an update. */
  watch(subscriber: RedisClient): Promise<void>;
}

/*
 * Saves a definition unless it is file-managed and this save is not from its files; with ARGV[7]
 * '1', a definition equal to the stored one keeps its version (only the file mark may change).
 * KEYS[1] actions hash, KEYS[2] versions hash
 * ARGV[1] id, ARGV[2] definition JSON, ARGV[3] updatedAt ms, ARGV[4] change channel,
 *   ARGV[5] 'files' or 'user', ARGV[6] the managing file ('' for none; read when ARGV[5] is 'files'),
 *   ARGV[7] '1' to keep the version of an unchanged definition
 * Returns { version, existed (0|1), unchanged (0|1) }, or { -1, file } when the action is
 * managed by that file. Versions only grow, even across a delete.
 */
const PUT_SCRIPT = luaScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local managed = ''
if cur then
  local ok, d = pcall(cjson.decode, cur)
  if ok and type(d) == 'table' and type(d.managedBy) == 'string' then managed = d.managedBy end
end
if ARGV[5] ~= 'files' and managed ~= '' then return { -1, managed } end
local mark = managed
if ARGV[5] == 'files' then mark = ARGV[6] end
local same = ARGV[7] == '1' and cur and string.sub(cur, -(#ARGV[2] + 1)) == ARGV[2] .. '}'
if same and mark == managed then
  return { tonumber(redis.call('HGET', KEYS[2], ARGV[1])), 1, 1 }
end
local v
if same then v = tonumber(redis.call('HGET', KEYS[2], ARGV[1])) else v = redis.call('HINCRBY', KEYS[2], ARGV[1], 1) end
local markJson = ''
if mark ~= '' then markJson = ',"managedBy":' .. cjson.encode(mark) end
redis.call('HSET', KEYS[1], ARGV[1], '{"version":' .. v .. ',"updatedAt":' .. ARGV[3] .. markJson .. ',"definition":' .. ARGV[2] .. '}')
if not same then redis.call('PUBLISH', ARGV[4], ARGV[1]) end
local existed = 0
if cur then existed = 1 end
local unchanged = 0
if same then unchanged = 1 end
return { v, existed, unchanged }
`);

/*
 * Deletes an action unless it is file-managed and this delete is not from its files.
 * KEYS[1] actions hash; ARGV[1] id, ARGV[2] 'files' or 'user', ARGV[3] change channel
 * Returns 1 deleted, 0 not there, or the managing file's name.
 */
const DELETE_SCRIPT = luaScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
if ARGV[2] ~= 'files' then
  local ok, d = pcall(cjson.decode, cur)
  if ok and type(d) == 'table' and type(d.managedBy) == 'string' and d.managedBy ~= '' then return d.managedBy end
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1
`);

/** Largest action definition accepted, serialized as JSON. */
export const MAX_DEFINITION_BYTES = 256 * 1024;

export interface ActionStoreDeps {
  redis: RedisClient;
  keys: RelayKeys;
  userAgent: string;
  /** Only warnings of the change subscriber go there. */
  logger: Pick<Logger, 'warn'>;
  /** Checks a parsed definition before it is saved (the egress policy of its URLs); problems refuse the save. */
  vet?: (def: ActionDefinition) => Promise<FieldProblem[]>;
  now?: () => number;
}

/** The problem of a definition that holds itself, where it does. */
export const CYCLE_PROBLEM = 'refers back to one of its own parents (a YAML alias inside its anchor): a definition cannot hold a cycle';

/**
 * The field path of the first value that holds one of its own parents (e.g. a YAML `&b {self: *b}`),
 * or null. A value used twice elsewhere (an alias to a sibling) is no cycle. Walks with a stack of
 * its own, so that a deep value cannot overflow the call stack.
 */
export function findCycle(root: unknown): string | null {
  if (root === null || typeof root !== 'object') return null;
  const parents = new Set<object>([root]);
  const frame = (value: object, path: string) => ({ value, path, entries: Object.entries(value), next: 0 });
  const stack = [frame(root, '')];
  for (let top = stack.at(-1); top; top = stack.at(-1)) {
    const entry = top.entries[top.next++];
    if (!entry) {
      parents.delete(top.value);
      stack.pop();
      continue;
    }
    const [key, child] = entry;
    if (child === null || typeof child !== 'object') continue;
    const path = Array.isArray(top.value) ? `${top.path}[${key}]` : top.path ? `${top.path}.${key}` : key;
    if (parents.has(child)) return path;
    parents.add(child);
    stack.push(frame(child, path));
  }
  return null;
}

/** The definition as JSON; one that cannot be (a cycle, a nesting too deep) is refused, naming the field where it can. */
function serialized(input: unknown): string {
  try {
    return JSON.stringify(input) ?? '';
  } catch (err: unknown) {
    const cycle = findCycle(input);
    throw new ValidationError('invalid action definition', [
      cycle === null
        ? { path: '', message: `cannot be written as JSON: ${coerceError(err).message}` }
        : { path: cycle, message: CYCLE_PROBLEM },
    ]);
  }
}

/** Refuses a definition too large to keep, naming its largest top-level field. */
function checkSize(input: unknown): void {
  const size = Buffer.byteLength(serialized(input));
  if (size <= MAX_DEFINITION_BYTES) return;
  let path = '';
  let largest = 0;
  if (input !== null && typeof input === 'object' && !Array.isArray(input)) {
    for (const [key, value] of Object.entries(input)) {
      const bytes = Buffer.byteLength(JSON.stringify(value) ?? '');
      if (bytes > largest) [path, largest] = [key, bytes];
    }
  }
  const what = path ? ` (${path}: ${largest} bytes)` : '';
  throw new ValidationError('invalid action definition', [
    { path, message: `the definition is ${size} bytes${what}; at most ${MAX_DEFINITION_BYTES} bytes serialized` },
  ]);
}

export function createActionStore(deps: ActionStoreDeps): ActionStore {
  const { redis, keys, logger } = deps;
  const now = deps.now ?? Date.now;
  const cache = new Map<string, Promise<CompiledAction | null>>();
  /** The loaded entries of `cache`, for compiledNow: dropped with them. */
  const loaded = new WeakMap<Promise<CompiledAction | null>, CompiledAction>();
  // Bumped on every change notice, so a fetch that raced an update is not cached.
  let generation = 0;

  const get = async (id: string): Promise<StoredAction | null> => {
    const raw = await redis.hget(keys.actions, id);
    return raw === null ? null : (JSON.parse(raw) as StoredAction);
  };

  const load = async (id: string): Promise<CompiledAction | null> => {
    const stored = await get(id);
    if (!stored) return null;
    // Checked again as it is read: a definition stored by an older version (or edited by hand) gets
    // the defaults of fields added since, and one the schema no longer takes is a ValidationError
    // naming the field (the producer's 400, the worker's unknown_action), not a crash inside compile.
    return compileAction(parseActionDefinition(stored.definition), { version: stored.version, userAgent: deps.userAgent });
  };

  const validate = async (input: unknown): Promise<ActionDefinition> => {
    checkSize(input);
    const def = parseActionDefinition(input);
    const refused = (await deps.vet?.(def)) ?? [];
    if (refused.length > 0) throw new ValidationError('invalid action definition', refused);
    return def;
  };

  return {
    validate,
    async put(input, opts = {}) {
      // Handing an action back to the API changes only who manages it: its definition is the one
      // stored, vetted when it was saved, and a stricter egress policy since is checked at every
      // connection anyway. Vetting it again would leave a gone file's action managed for ever.
      const def = opts.fromFile === '' ? parseActionDefinition(input) : await validate(input);
      const fromFiles = opts.fromFile !== undefined;
      const answer = (await PUT_SCRIPT.run(
        redis,
        2,
        keys.actions,
        keys.actionVersions,
        def.id,
        JSON.stringify(def),
        String(now()),
        keys.actionsChannel,
        fromFiles ? 'files' : 'user',
        opts.fromFile ?? '',
        fromFiles || opts.keepUnchanged ? '1' : '0',
      )) as [number, number, number] | [-1, string];
      if (answer[0] === -1) throw new ManagedByFilesError(def.id, String(answer[1]));
      const [version, existed, unchanged] = answer as [number, number, number];
      if (unchanged === 0) cache.delete(def.id);
      return { id: def.id, version, created: existed === 0, unchanged: unchanged === 1 };
    },
    get,
    async list() {
      const all = await redis.hvals(keys.actions);
      return all.map((raw) => JSON.parse(raw) as StoredAction).sort((a, b) => a.definition.id.localeCompare(b.definition.id));
    },
    async delete(id, opts = {}) {
      const answer = (await DELETE_SCRIPT.run(redis, 1, keys.actions, id, opts.fromFiles ? 'files' : 'user', keys.actionsChannel)) as
        number | string;
      if (typeof answer === 'string') throw new ManagedByFilesError(id, answer);
      cache.delete(id);
      return answer === 1;
    },
    getCompiled(id) {
      const hit = cache.get(id);
      if (hit) return hit;
      const gen = generation;
      const pending: Promise<CompiledAction | null> = load(id).then(
        (action) => {
          // Only this load's own entry: a newer one (asked for after a change) stays.
          if (action === null || gen !== generation) {
            if (cache.get(id) === pending) cache.delete(id);
          } else loaded.set(pending, action);
          return action;
        },
        (err: unknown) => {
          if (cache.get(id) === pending) cache.delete(id);
          throw coerceError(err);
        },
      );
      cache.set(id, pending);
      return pending;
    },
    compiledNow(id) {
      const hit = cache.get(id);
      return hit && loaded.get(hit);
    },
    async watch(subscriber) {
      subscriber.on('message', (channel: string, id: string) => {
        if (channel !== keys.actionsChannel) return;
        generation++;
        cache.delete(id);
      });
      const forget = () => {
        generation++;
        cache.clear();
      };
      const warn = (err: unknown) => logger.warn({ err: coerceError(err).message }, 'action change subscriber error');
      // Notices sent while disconnected are lost: forget everything once subscribed again (ioredis
      // resubscribes first). Only after a lost connection: the first connection's own 'ready' (the
      // subscription below may be queued until then) lost nothing.
      let dropped = false;
      subscriber.on('close', () => (dropped = true));
      subscriber.on('ready', () => {
        if (!dropped) return;
        dropped = false;
        forget();
        subscriber.subscribe(keys.actionsChannel).then(forget, warn);
      });
      subscriber.on('error', warn);
      await pastHandshake(subscriber);
      await subscriber.subscribe(keys.actionsChannel);
      // What was cached before the subscription may have missed a notice.
      forget();
    },
  };
}
