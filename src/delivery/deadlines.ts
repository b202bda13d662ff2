/**
 * One deadline per request without a timer and an AbortController per request.
 *
 * A request's `Deadline` is the abort signal undici listens to (undici takes any object with
 * addEventListener / removeEventListener as its `signal`). Deadlines of the same timeoutMs end in
 * the order they start, so each timeoutMs keeps a first-in-first-out line and one timer, armed for
 * the first deadline still running; a request that ends leaves the line at once when it is the
 * oldest (requests mostly end in order), so a line holds little more than the requests in flight.
 * Behind one slow request, the ended ones after it stay (a few dozen bytes each, nothing of their
 * request) until it ends or expires: at most the requests started within timeoutMs.
 * Per request this is one small object, where an AbortController, its listener, a Timeout in the
 * timer list and their removal cost a few microseconds and ~1 KB of garbage at full speed.
 */

/** The abort signal of one request; `aborted` once its time is up. */
export class Deadline {
  aborted = false;
  /** undici reads it: undefined makes its own RequestAbortedError, which the sender maps to a timeout. */
  readonly reason: undefined = undefined;
  ended = false;
  private listener: (() => void) | null = null;
  /**
   * Called too when time is up: undici acts on an abort only once the request has a connection,
   * so the sender ends a request still connecting (DNS, TCP, TLS) or queued for a socket with this.
   */
  onTimeUp: ((reason?: unknown) => void) | null = null;

  constructor(
    /** When it expires, on the `now` clock of its Deadlines. */
    readonly at: number,
  ) {}

  addEventListener(_type: 'abort', listener: () => void): void {
    this.listener = listener;
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    if (this.listener === listener) this.listener = null;
  }

  /** The request ended: the deadline no longer fires, and holds nothing of undici's. */
  end(): void {
    this.ended = true;
    this.listener = null;
    this.onTimeUp = null;
  }

  /** Time is up: tells undici, once, unless the request has ended. */
  expire(): void {
    if (this.aborted || this.ended) return;
    this.aborted = true;
    const listener = this.listener;
    const onTimeUp = this.onTimeUp;
    this.listener = null;
    this.onTimeUp = null;
    listener?.();
    onTimeUp?.();
  }
}

/** The deadlines of one timeoutMs, oldest first; `head` is the first that may still run. */
interface Line {
  items: Deadline[];
  head: number;
  timer: NodeJS.Timeout | undefined;
}

export interface Deadlines {
  /** A deadline `timeoutMs` from now; pass it as the request's signal and `end` it when the request ends. */
  start(timeoutMs: number): Deadline;
  /** The request ended (answered, failed or timed out): its deadline no longer fires. */
  end(deadline: Deadline, timeoutMs: number): void;
  /** Deadlines not yet ended or expired, for tests. */
  pending(): number;
}

/** Ended entries dropped from the front of a line before its array is compacted. */
const COMPACT_AFTER = 1024;

export function createDeadlines(now: () => number = () => performance.now()): Deadlines {
  const lines = new Map<number, Line>();

  const dropEnded = (line: Line): void => {
    const { items } = line;
    while (line.head < items.length && (items[line.head] as Deadline).ended) line.head++;
    if (line.head === items.length) {
      items.length = 0;
      line.head = 0;
    } else if (line.head >= COMPACT_AFTER && line.head * 2 >= items.length) {
      line.items = items.slice(line.head);
      line.head = 0;
    }
  };

  const arm = (line: Line, timeoutMs: number, wait: number): void => {
    line.timer = setTimeout(() => sweep(line, timeoutMs), Math.max(1, Math.ceil(wait)));
    line.timer.unref();
  };

  // Expires every deadline of the line that is due, then waits for the next one; an idle line goes.
  function sweep(line: Line, timeoutMs: number): void {
    line.timer = undefined;
    const t = now();
    for (;;) {
      dropEnded(line);
      const first = line.items[line.head];
      if (!first) {
        lines.delete(timeoutMs);
        return;
      }
      if (first.at > t) return arm(line, timeoutMs, first.at - t);
      line.head++;
      first.expire();
    }
  }

  return {
    start(timeoutMs) {
      const deadline = new Deadline(now() + timeoutMs);
      let line = lines.get(timeoutMs);
      if (!line) {
        line = { items: [], head: 0, timer: undefined };
        lines.set(timeoutMs, line);
      }
      line.items.push(deadline);
      if (!line.timer) arm(line, timeoutMs, timeoutMs);
      return deadline;
    },
    end(deadline, timeoutMs) {
      deadline.end();
      const line = lines.get(timeoutMs);
      if (line?.items[line.head] === deadline) dropEnded(line);
    },
    pending() {
      let n = 0;
      for (const line of lines.values()) for (let i = line.head; i < line.items.length; i++) if (!(line.items[i] as Deadline).ended) n++;
      return n;
    },
  };
}
