import type { PartitionKeys, RedisClient } from '../redis/redis-connection.js';

/**
 * Reads, at scrape time, how long the job next in line has been ready to run, in seconds (0 when
 * nothing waits). O(1): the tail of BullMQ's wait list (FIFO: workers take from the right; jobs
 * back for a reserved rate-limit slot), the head of its prioritized set (fresh jobs at priority 1,
 * replays behind them at 1000) and one HMGET per job found. A replay waiting behind fresh jobs
 * is not the head, so the gauge shows the oldest fresh job.
 *
 * A job that never ran has been ready since `timestamp + opts.delay` (enqueue plus its delay).
 * BullMQ keeps no record of when a retried or deferred job became ready again (the promotion
 * resets `delay`), and counting from its enqueue would add its backoff to the age; for such a
 * job the age counts from the first scrape of this process that found it next in line, so it
 * still grows without bound when no worker takes it.
 */
export function createOldestWaitingProbe(redis: RedisClient, keys: PartitionKeys, now: () => number = Date.now): () => Promise<number> {
  const waitKey = `${keys.bullPrefix}:${keys.queueName}:wait`;
  const prioritizedKey = `${keys.bullPrefix}:${keys.queueName}:prioritized`;
  // At most two entries (the two heads): when each was first seen next in line.
  let firstSeen = new Map<string, number>();

  return async () => {
    const [fifoHead, prioritized] = await Promise.all([redis.lindex(waitKey, -1), redis.zrange(prioritizedKey, 0, 0)]);
    const ids = [fifoHead, prioritized[0]].filter((id): id is string => typeof id === 'string' && id.length > 0);
    const t = now();
    const seen = new Map<string, number>();
    let oldest = 0;
    for (const id of ids) {
      const [timestamp, processedOn, opts] = await redis.hmget(keys.jobKey(id), 'timestamp', 'processedOn', 'opts');
      if (timestamp === null) continue; // taken and removed since
      const since = firstSeen.get(id) ?? t;
      seen.set(id, since);
      const readyAt = processedOn ? Math.max(Number(processedOn), since) : Number(timestamp) + delayOf(opts);
      oldest = Math.max(oldest, (t - readyAt) / 1000);
    }
    firstSeen = seen;
    return oldest;
  };
}

function delayOf(opts: string | null | undefined): number {
  if (!opts) return 0;
  try {
    const delay = (JSON.parse(opts) as { delay?: unknown }).delay;
    return typeof delay === 'number' && delay > 0 ? delay : 0;
  } catch {
    return 0;
  }
}
