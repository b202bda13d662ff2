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
 * JSON lines on stdout, written asynchronously: while one write(2) is in flight the lines that
 * follow are joined into the next, so a busy worker makes far fewer syscalls than lines (one
 * per delivery made them a tenth of its CPU) and a quiet one still writes each line at once.
 * The buffer is flushed on exit; a process killed with SIGKILL may lose its last lines.
 * Redaction paths are exact (no wildcards): wildcard paths walk every object logged. Message
 * texts are masked by the secret resolver before they are logged.
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'action-relay' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT_PATHS, censor: '***' },
    },
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}

/** Writes out what the logger holds; call before the process exits. */
export function flushLogger(logger: Logger): Promise<void> {
  return new Promise((resolve) => logger.flush(() => resolve()));
}
