import { afterAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { createActionStore } from '../../src/actions/action-store.js';
import { hashTaggedPrefix } from '../../src/config/config.js';
import { relayKeys } from '../../src/redis/redis-connection.js';
import { removePrefixKeys, testConfig, waitFor } from '../support/harness.js';

/*
 * The compiled-action cache and its change subscription: a change notice published while the
 * subscriber is disconnected is lost, so a reconnect must forget every cached action.
 */

const config = testConfig();
const keys = relayKeys(hashTaggedPrefix(config.ACTION_RELAY_PREFIX), config.QUEUE_PARTITIONS);
const redis = new Redis(config.REDIS_URL);
const subscriber = new Redis(config.REDIS_URL);
const admin = new Redis(config.REDIS_URL);

afterAll(async () => {
  await Promise.all([redis, subscriber, admin].map((c) => c.quit().catch(() => undefined)));
  await removePrefixKeys(config);
});

const definition = (path: string) => ({
  id: 'cached',
  name: 'cached',
  endpoint: { url: 'http://127.0.0.1:9', path, method: 'POST' },
});

describe('the action cache', () => {
  it('a reconnect of the change subscriber drops the cached actions: a change made while it was away is used', async () => {
    const store = createActionStore({ redis, keys, userAgent: 'test', logger: { warn: () => undefined } });
    // Saved before the subscription: its own change notice cannot arrive after the read below.
    await store.put(definition('/old'));
    // The subscriber's connection id, read before SUBSCRIBE (a subscribed connection answers nothing else).
    const subscriberId = (await subscriber.client('ID')) as number;
    await store.watch(subscriber);
    expect((await store.getCompiled('cached'))?.definition.endpoint.path).toBe('/old');

    // A change whose notice this subscriber never receives: written straight into the hash, no PUBLISH.
    const saved = await store.get('cached');
    if (!saved) throw new Error('the action was not saved');
    const stored = { ...saved, version: 2, definition: { ...saved.definition, endpoint: { ...saved.definition.endpoint, path: '/new' } } };
    await redis.hset(keys.actions, 'cached', JSON.stringify(stored));
    const cached = await store.getCompiled('cached');
    expect(cached?.definition.endpoint.path).toBe('/old');
    expect(cached?.version).toBe(1);

    // Redis drops the subscriber's connection; ioredis reconnects and subscribes again.
    expect(await admin.client('KILL', 'ID', String(subscriberId))).toBe(1);
    const fresh = await waitFor(
      async () => {
        const action = await store.getCompiled('cached');
        return action?.version === 2 ? action : undefined;
      },
      10_000,
      'the definition written while the subscriber was away',
    );
    expect(fresh.definition.endpoint.path).toBe('/new');

    // Subscribed again: a change saved through another instance (which publishes) reaches this cache.
    const other = createActionStore({ redis, keys, userAgent: 'test', logger: { warn: () => undefined } });
    await other.put(definition('/newest'));
    await waitFor(
      async () => (await store.getCompiled('cached'))?.definition.endpoint.path === '/newest',
      10_000,
      'the published change after the reconnect',
    );
  });

  /*
   * The two tests below subscribe for real, then close the subscriber: only the notices they hand
   * to it themselves reach the store, so a reconnect of its connection (a spurious 'ready', which
   * drops the whole cache) cannot move what they read. The first test covers real notices.
   */
  async function quietStore(id: string) {
    const sub = new Redis(config.REDIS_URL);
    const store = createActionStore({ redis, keys, userAgent: 'test', logger: { warn: () => undefined } });
    await store.put({ ...definition('/a'), id });
    await store.watch(sub);
    sub.disconnect();
    const notice = () => sub.emit('message', keys.actionsChannel, id);
    return { store, notice };
  }

  it('compiledNow answers only what getCompiled has loaded, and forgets it with the cache', async () => {
    const { store, notice } = await quietStore('now');
    expect(store.compiledNow('now')).toBeUndefined();
    const loading = store.getCompiled('now');
    // Asked for, not loaded yet.
    expect(store.compiledNow('now')).toBeUndefined();
    const loaded = await loading;
    expect(store.compiledNow('now')).toBe(loaded);
    expect(store.compiledNow('missing')).toBeUndefined();
    await store.getCompiled('missing');
    expect(store.compiledNow('missing')).toBeUndefined();

    // A change saved by another instance, and its notice: the next job loads the new definition.
    const other = createActionStore({ redis, keys, userAgent: 'test', logger: { warn: () => undefined } });
    await other.put({ ...definition('/b'), id: 'now' });
    notice();
    expect(store.compiledNow('now')).toBeUndefined();
    expect((await store.getCompiled('now'))?.definition.endpoint.path).toBe('/b');
    expect(store.compiledNow('now')?.definition.endpoint.path).toBe('/b');
    // A change saved through this instance drops it as well.
    await store.put({ ...definition('/c'), id: 'now' });
    expect(store.compiledNow('now')).toBeUndefined();
  });

  it('a load that raced a change notice leaves the entry asked for after the notice in place', async () => {
    const { store, notice } = await quietStore('raced');
    const first = store.getCompiled('raced');
    // A change notice arrives while the first load is on its way.
    notice();
    const second = store.getCompiled('raced');
    expect(second).not.toBe(first);
    await Promise.all([first, second]);
    // The first load is not cached (it may predate the change); the second one is, and stays.
    expect(store.compiledNow('raced')).toBe(await second);
    expect(store.getCompiled('raced')).toBe(second);
  });

  it("keeps the cache on the subscriber's first 'ready' and drops it on a 'ready' after a lost connection", async () => {
    const store = createActionStore({ redis, keys, userAgent: 'test', logger: { warn: () => undefined } });
    await store.put({ ...definition('/a'), id: 'ready' });
    const sub = new Redis(config.REDIS_URL);
    try {
      await store.watch(sub);
      const loaded = await store.getCompiled('ready');
      // A 'ready' with no 'close' before it: the first connection's own, which lost nothing.
      sub.emit('ready');
      expect(store.compiledNow('ready')).toBe(loaded);
      // A reconnect: the connection closed, then was ready again.
      sub.emit('close');
      sub.emit('ready');
      expect(store.compiledNow('ready')).toBeUndefined();
      expect((await store.getCompiled('ready'))?.definition.endpoint.path).toBe('/a');
    } finally {
      sub.disconnect();
    }
  });

  it('subscribes after the connection handshake: asked to watch during it, the connection is kept, not restarted', async () => {
    const warnings: unknown[] = [];
    const store = createActionStore({ redis, keys, userAgent: 'test', logger: { warn: (detail: unknown) => void warnings.push(detail) } });
    await store.put({ ...definition('/h1'), id: 'handshake' });
    const sub = new Redis(config.REDIS_URL);
    let closes = 0;
    sub.on('close', () => closes++);
    try {
      // Inside 'connect', before ioredis has sent its handshake: a SUBSCRIBE sent now would reach
      // Redis before the ready check's INFO, which a subscribed connection refuses.
      const watching = new Promise<void>((resolve, reject) => sub.once('connect', () => store.watch(sub).then(resolve, reject)));
      await watching;
      expect(sub.status).toBe('ready');
      expect((await store.getCompiled('handshake'))?.definition.endpoint.path).toBe('/h1');
      // Subscribed: a change saved through another instance (which publishes) reaches this cache.
      const other = createActionStore({ redis, keys, userAgent: 'test', logger: { warn: () => undefined } });
      await other.put({ ...definition('/h2'), id: 'handshake' });
      await waitFor(async () => (await store.getCompiled('handshake'))?.definition.endpoint.path === '/h2', 10_000, 'the published change');
      expect(closes).toBe(0);
      expect(warnings).toEqual([]);
    } finally {
      sub.disconnect();
    }
  });
});
