import type { PartitionKeys, RedisClient } from '../redis/redis-connection.js';

/** Jobs of one action that ended in a window. */
export interface ActivityCounts {
  delivered: number;
  dead: number;
  /** Attempts beyond the first, of the jobs that ended in the window. */
  retries: number;
}

export interface ActionActivity {
  /** The current minute and the 14 before it. */
  last15m: ActivityCounts;
  /** The current minute and the 59 before it. */
  lastHour: ActivityCounts;
}

const FIELD_TO_COUNT = { d: 'delivered', x: 'dead', r: 'retries' } as const satisfies Record<string, keyof ActivityCounts>;

const zero = (): ActivityCounts => ({ delivered: 0, dead: 0, retries: 0 });

/**
 * Per-action counts of the last 15 minutes and hour, from the per-minute counters the end-of-job
 * script keeps (`PartitionKeys.activity`): 60 small hashes per partition, one pipeline each, however
 * many jobs ran. Actions with no ended job in the hour are absent.
 */
export async function readActivity(
  redis: RedisClient,
  partitions: readonly PartitionKeys[],
  now: number,
): Promise<Map<string, ActionActivity>> {
  const current = Math.floor(now / 60_000);
  const byAction = new Map<string, ActionActivity>();
  // One pipeline per partition: its keys share one hash tag, so one slot of a Redis Cluster.
  const perPartition = await Promise.all(
    partitions.map(async (keys) => {
      const pipe = redis.pipeline();
      for (let age = 0; age < 60; age++) pipe.hgetall(keys.activity(current - age));
      return (await pipe.exec()) ?? [];
    }),
  );
  for (const minutes of perPartition) {
    minutes.forEach(([err, hash], age) => {
      if (err || !hash) return;
      for (const [field, raw] of Object.entries(hash as Record<string, string>)) {
        const bar = field.lastIndexOf('|');
        const count = FIELD_TO_COUNT[field.slice(bar + 1) as keyof typeof FIELD_TO_COUNT];
        if (bar <= 0 || !count) continue;
        const actionId = field.slice(0, bar);
        let entry = byAction.get(actionId);
        if (!entry) byAction.set(actionId, (entry = { last15m: zero(), lastHour: zero() }));
        const n = Number(raw) || 0;
        entry.lastHour[count] += n;
        if (age < 15) entry.last15m[count] += n;
      }
    });
  }
  return byAction;
}
