import type { Logger } from 'pino';
import type { RedisClient, RelayKeys } from '../redis/redis-connection.js';
import { parseActionDefinition, compileAction, type CompiledAction } from './compile-action.js';
import type { ActionDefinition } from './action-schema.js';
import { ValidationError, coerceError, type FieldProblem } from '../errors/errors.js';
import { luaScript } from '../redis/lua-script.js';

export interface StoredAction {
  version: number;
  updatedAt: number;
  definition: ActionDefinition;
}

export interface ActionStore {
  /** Validates and saves a definition; the version grows by one on every save. */
  put(input: unknown): Promise<{ id: string; version: number; created: boolean }>;
  get(id: string): Promise<StoredAction | null>;
  list(): Promise<StoredAction[]>;
  delete(id: string): Promise<boolean>;
  /** The compiled action, cached until a change is published. */
  getCompiled(id: string): Promise<CompiledAction | null>;
  /** Subscribes to changes so that cached actions are dropped within moments of an update. */
  watch(subscriber: RedisClient): Promise<void>;
}

/*
 * KEYS[1] actions hash, KEYS[2] versions hash
 * ARGV[1] id, ARGV[2] definition JSON, ARGV[3] updatedAt ms, ARGV[4] change channel
 * Returns { version, existed (0|1) }. Versions only grow, even across a delete.
 */
const PUT_SCRIPT = luaScript(`
local existed = redis.call('HEXISTS', KEYS[1], ARGV[1])
local v = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('HSET', KEYS[1], ARGV[1], '{"version":' .. v .. ',"updatedAt":' .. ARGV[3] .. ',"definition":' .. ARGV[2] .. '}')
redis.call('PUBLISH', ARGV[4], ARGV[1])
return { v, existed }
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

/** Refuses a definition too large to keep, naming its largest top-level field. */
function checkSize(input: unknown): void {
  const size = Buffer.byteLength(JSON.stringify(input) ?? '');
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
  // Bumped on every change notice, so a fetch that raced an update is not cached.
  let generation = 0;

  const get = async (id: string): Promise<StoredAction | null> => {
    const raw = await redis.hget(keys.actions, id);
    return raw === null ? null : (JSON.parse(raw) as StoredAction);
  };

  const load = async (id: string): Promise<CompiledAction | null> => {
    const stored = await get(id);
    if (!stored) return null;
    return compileAction(stored.definition, { version: stored.version, userAgent: deps.userAgent });
  };

  return {
    async put(input) {
      checkSize(input);
      const def = parseActionDefinition(input);
      const refused = (await deps.vet?.(def)) ?? [];
      if (refused.length > 0) throw new ValidationError('invalid action definition', refused);
      const [version, existed] = (await PUT_SCRIPT.run(
        redis,
        2,
        keys.actions,
        keys.actionVersions,
        def.id,
        JSON.stringify(def),
        String(now()),
        keys.actionsChannel,
      )) as [number, number];
      cache.delete(def.id);
      return { id: def.id, version, created: existed === 0 };
    },
    get,
    async list() {
      const all = await redis.hvals(keys.actions);
      return all.map((raw) => JSON.parse(raw) as StoredAction).sort((a, b) => a.definition.id.localeCompare(b.definition.id));
    },
    async delete(id) {
      const removed = await redis.hdel(keys.actions, id);
      await redis.publish(keys.actionsChannel, id);
      cache.delete(id);
      return removed === 1;
    },
    getCompiled(id) {
      const hit = cache.get(id);
      if (hit) return hit;
      const gen = generation;
      const pending = load(id).then(
        (action) => {
          if (action === null || gen !== generation) cache.delete(id);
          return action;
        },
        (err: unknown) => {
          cache.delete(id);
          throw coerceError(err);
        },
      );
      cache.set(id, pending);
      return pending;
    },
    async watch(subscriber) {
      subscriber.on('message', (channel: string, id: string) => {
        if (channel !== keys.actionsChannel) return;
        generation++;
        cache.delete(id);
      });
      // Notices sent while disconnected are lost: forget everything on reconnect.
      subscriber.on('ready', () => {
        generation++;
        cache.clear();
      });
      subscriber.on('error', (err: unknown) => logger.warn({ err: coerceError(err).message }, 'action change subscriber error'));
      await subscriber.subscribe(keys.actionsChannel);
    },
  };
}
