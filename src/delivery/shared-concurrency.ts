/** What the budget adjusts: a BullMQ Worker's settable `concurrency`. */
export interface ConcurrencyTarget {
  concurrency: number;
}

export interface SharedConcurrency {
  /** The concurrency partition `i`'s worker starts with. */
  initial(i: number): number;
  /** From now on, partition `i`'s worker follows the budget. */
  attach(i: number, target: ConcurrencyTarget): void;
  /** Wraps partition `i`'s processor so that the budget follows its jobs. */
  track<A extends unknown[], R>(i: number, fn: (...args: A) => Promise<R>): (...args: A) => Promise<R>;
  /** Jobs running now, per partition. */
  running(): readonly number[];
}

/**
 * The jobs-in-flight budget of one process (WORKER_CONCURRENCY), shared by the BullMQ workers of
 * its partitions. Work-conserving: a worker may run what it runs now plus an equal share of what
 * is free, so a partition with work takes the slots the idle ones leave (one hot rate-limit key
 * can use the whole budget), and every partition keeps at least one slot, so none starves.
 * Rebalanced as each job starts and ends; BullMQ reads the new value before its next fetch.
 * Jobs in flight stay at most budget + partitions - 1 (a partition running nothing may always
 * start one).
 */
export function createSharedConcurrency(budget: number, partitions: number): SharedConcurrency {
  const running = new Array<number>(partitions).fill(0);
  const targets = new Array<ConcurrencyTarget | undefined>(partitions);
  let total = 0;
  let share = Math.ceil(budget / partitions);

  const limitOf = (i: number) => Math.max(1, (running[i] ?? 0) + share);
  const apply = (i: number) => {
    const t = targets[i];
    const c = limitOf(i);
    if (t && t.concurrency !== c) t.concurrency = c;
  };
  const moved = (i: number, delta: number) => {
    running[i] = (running[i] ?? 0) + delta;
    total += delta;
    // Rounded up: at a full budget the share is 0, not -1, so that a worker finishing a job may
    // still fetch the next one with it (BullMQ's fetch-next asks running <= concurrency).
    const next = Math.ceil((budget - total) / partitions);
    if (next === share) return apply(i);
    share = next;
    for (let k = 0; k < partitions; k++) apply(k);
  };

  return {
    initial: limitOf,
    attach(i, target) {
      targets[i] = target;
      apply(i);
    },
    track(i, fn) {
      return async (...args) => {
        moved(i, 1);
        try {
          return await fn(...args);
        } finally {
          // Released on the next turn, once BullMQ has asked whether to fetch the next job along
          // with this one's completion (fetch-next, which saves a round trip per job): it asks
          // right after the processor returns, and still counts this job then.
          setImmediate(() => moved(i, -1));
        }
      };
    },
    running: () => running,
  };
}
