import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/config.js';
import { deduplicationId } from '../../src/queue/producer.js';
import { redisRefusal } from '../../src/redis/redis-refusal.js';

describe('recovery settings', () => {
  it('takes a lock shorter than the request timeout cap: the lock is renewed while the request runs', () => {
    const config = loadConfig({ JOB_LOCK_MS: '5000', REQUEST_TIMEOUT_CAP_MS: '120000' });
    expect(config.JOB_LOCK_MS).toBe(5000);
    expect(loadConfig({})).toMatchObject({ JOB_LOCK_MS: 10_000, JOB_MAX_STALLS: 5, REDIS_SENTINEL_MASTER: 'mymaster' });
  });

  it('reads REDIS_SENTINELS as a list, and refuses it together with REDIS_CLUSTER_NODES', () => {
    expect(loadConfig({ REDIS_SENTINELS: '10.0.0.1:26379, 10.0.0.2:26379' }).REDIS_SENTINELS).toEqual(['10.0.0.1:26379', '10.0.0.2:26379']);
    expect(() => loadConfig({ REDIS_SENTINELS: 'a:26379', REDIS_CLUSTER_NODES: 'b:6379' })).toThrow(ConfigError);
    expect(() => loadConfig({ JOB_MAX_STALLS: '-1' })).toThrow(/JOB_MAX_STALLS/);
  });
});

describe('deduplicationId', () => {
  it('is per action: one key on two actions is two ids, one key on one action one id', () => {
    expect(deduplicationId('send_sms', 'order-77')).not.toBe(deduplicationId('update_crm', 'order-77'));
    expect(deduplicationId('send_sms', 'order-77')).toBe(deduplicationId('send_sms', 'order-77'));
    // Action ids hold no ':' (their schema), so the first ':' separates the pair whatever the key holds.
    expect(deduplicationId('send_sms', 'a:b')).toBe('send_sms:a:b');
  });
});

describe('redisRefusal', () => {
  it('names an out-of-memory, read-only or unreachable Redis, and nothing else', () => {
    expect(redisRefusal(new Error("OOM command not allowed when used memory > 'maxmemory'."))).toMatch(/out of memory/);
    expect(redisRefusal(new Error("READONLY You can't write against a read only replica."))).toMatch(/read-only replica/);
    expect(redisRefusal(new Error('Connection is closed.'))).toMatch(/unreachable/);
    expect(redisRefusal(new Error('ERR wrong number of arguments'))).toBeUndefined();
    expect(redisRefusal('OOM')).toBeUndefined();
  });
});
