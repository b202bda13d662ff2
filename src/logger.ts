import { pino, type Logger, type DestinationStream } from 'pino';

/** Paths whose values never reach a log line, whatever logs them. */
export const REDACT_PATHS = [
  'headers.authorization',
  'headers.cookie',
  'req.headers.authorization',
  'authorization',
  'password',
  'token',
  'clientSecret',
  'secret',
];

/**
 * JSON lines on stdout, the lines of one event-loop turn joined into one write at its end (see
 * linesPerTurn): a busy worker makes far fewer syscalls than lines (one per delivery made them a
 * tenth of its CPU) and a quiet one still writes each line at once. That write is synchronous: it
 * costs no thread-pool hand-off, and a log reader that stops reading holds the worker back rather
 * than letting its buffer grow. Lines still held at exit are written then; a process killed with
 * SIGKILL may lose the lines of its last turn.
 * Redaction paths are exact (no wildcards): wildcard paths walk every object logged. Message
 * texts are masked by the secret resolver before they are logged.
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'action-relay' },
      timestamp: isoTimeOncePerMs(),
      redact: { paths: REDACT_PATHS, censor: '***' },
    },
    destination ?? linesPerTurn(pino.destination({ dest: 1, sync: true })),
  );
}

/**
 * pino's isoTime, formatted once per millisecond: a busy worker logs several lines in one, and
 * toISOString was a visible share of each line.
 */
export function isoTimeOncePerMs(now: () => number = Date.now): () => string {
  let last = NaN;
  let field = '';
  return () => {
    const t = now();
    if (t !== last) {
      last = t;
      field = `,"time":"${new Date(t).toISOString()}"`;
    }
    return field;
  };
}

type SonicBoom = ReturnType<typeof pino.destination>;

/** Line joiners not yet collected: the exit hook hands their last lines over. */
const joiners = new Set<WeakRef<{ handOver(): void; sonic: SonicBoom }>>();
let exitHooked = false;

function onExit(): void {
  for (const ref of joiners) {
    const j = ref.deref();
    if (!j) continue;
    try {
      j.handOver();
      // pino's own exit hook for this stream may have run already: write what it did not see.
      j.sonic.flushSync();
    } catch {
      // A stream already closed: nothing more can be written to it.
    }
  }
}

/**
 * Joins the lines logged in one event-loop turn and hands them to `sonic` as one write at the end
 * of the turn. sonic-boom alone writes each line as it comes (sync) or whenever no write is in
 * flight (async, and a write to a fast pipe or file ends before the next delivery logs): one
 * write(2) per delivery, plus a thread-pool round trip when async, which the profile showed as
 * 5-7 % of a saturated worker. Lines still held at exit are written then.
 */
export function linesPerTurn(sonic: SonicBoom): DestinationStream & { flush(cb?: (err?: Error) => void): void } {
  let pending = '';
  let scheduled = false;
  const joiner = {
    sonic,
    handOver() {
      scheduled = false;
      if (pending === '') return;
      const lines = pending;
      pending = '';
      sonic.write(lines);
    },
  };
  if (!exitHooked) {
    exitHooked = true;
    process.once('exit', onExit);
  }
  for (const ref of joiners) if (!ref.deref()) joiners.delete(ref);
  joiners.add(new WeakRef(joiner));
  return {
    write(line: string) {
      pending += line;
      if (!scheduled) {
        scheduled = true;
        setImmediate(joiner.handOver);
      }
    },
    flush(cb) {
      joiner.handOver();
      sonic.flush(cb);
    },
  };
}

/** Writes out what the logger holds; call before the process exits. */
export function flushLogger(logger: Logger): Promise<void> {
  return new Promise((resolve) => logger.flush(() => resolve()));
}
