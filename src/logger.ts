import { pino, type Logger, type DestinationStream } from 'pino';

/** Paths whose values never reach a log line, whatever logs them. */
export const REDACT_PATHS = [
  'headers.authorization',
  'headers.cookie',
  'req.headers.authorization',
  '*.headers.authorization',
  'authorization',
  'password',
  'token',
  'clientSecret',
  'secret',
  '*.password',
  '*.token',
  '*.clientSecret',
];

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'action-relay' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT_PATHS, censor: '***' },
    },
    destination,
  );
}
