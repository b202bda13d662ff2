/**
 * Why a job ended in the dead-letter queue (docs/delivery.md, "Outcomes"): the one list the API
 * schema, the CLI's `--reason`, the metrics' `reason` label and the console's filter all read.
 * `stalled`: BullMQ gave the job up after it stalled (its worker killed or cut off) more than
 * JOB_MAX_STALLS times. No imports: the console's browser bundle takes it as it is.
 */
export const DEAD_REASONS = [
  'http_status',
  'timeout',
  'network',
  'capped',
  'invalid_params',
  'unknown_action',
  'auth',
  'blocked_destination',
  'response_invalid',
  'stalled',
] as const;
export type DeadReason = (typeof DEAD_REASONS)[number];
