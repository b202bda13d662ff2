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
 * JSON lines on stdout. Lines are written in 4 KiB batches rather than one write(2) each (a
 * line per delivery made the syscalls a tenth of a worker's CPU); `flushLogger` at shutdown
 * empties the buffer, and a process killed with SIGKILL may lose its last few lines.
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
    destination ?? pino.destination({ dest: 1, sync: false, minLength: 4096 }),
  );
}

/** Writes out what the logger holds; call before the process exits. */
export function flushLogger(logger: Logger): Promise<void> {
  return new Promise((resolve) => logger.flush(() => resolve()));
}
