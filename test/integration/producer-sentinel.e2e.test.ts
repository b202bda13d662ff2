import { describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { createProducer } from '../../src/producer.js';
import { removePrefixKeys, testConfig, testContext, trackRuns } from '../support/harness.js';
import { startSentinelSet } from '../support/recovery.js';

const { cleanups } = trackRuns();

describe('action-relay/producer through Redis Sentinel', () => {
  it('reads REDIS_SENTINELS and REDIS_SENTINEL_MASTER as the api and worker do: the job lands on the master', async () => {
    const set = await startSentinelSet('relay-master');
    cleanups.push(() => set.remove());
    // REDIS_URL names the shared test Redis: a producer that ignored the sentinels would go there.
    const sentinelEnv = { REDIS_SENTINELS: set.addresses, REDIS_SENTINEL_MASTER: set.masterName };
    const config = testConfig(sentinelEnv);
    cleanups.push(() => removePrefixKeys(config));
    const ctx = await testContext(config);
    cleanups.push(() => ctx.close());
    await ctx.store.put({ id: 'via_sentinel', name: 'via sentinel', endpoint: { url: 'http://127.0.0.1:9/x', method: 'POST' } });

    const producer = await createProducer({
      env: { REDIS_URL: config.REDIS_URL, ACTION_RELAY_PREFIX: config.ACTION_RELAY_PREFIX, ...sentinelEnv },
      onWarning: () => undefined,
    });
    cleanups.push(() => producer.close());
    const { jobId } = await producer.enqueue({ actionId: 'via_sentinel', params: {} });

    const master = new Redis(set.master.url);
    cleanups.push(async () => void master.disconnect());
    expect(await master.hget(ctx.queue.toKey(jobId), 'name')).toBe('via_sentinel');
  }, 90_000);
});
