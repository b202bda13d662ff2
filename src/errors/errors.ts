import type { DeadReason } from './dead-reasons.js';

export { DEAD_REASONS, type DeadReason } from './dead-reasons.js';

export interface FieldProblem {
  path: string;
  message: string;
}

/** Base class: every error that can end an attempt carries its own decision. */
export abstract class RelayError extends Error {
  abstract readonly code: string;
  /** Whether another attempt may succeed. */
  abstract readonly retryable: boolean;
  /** The dead-letter reason when this error ends the job. */
  abstract readonly reason: DeadReason;
}

/** Problems a message spells out; `problems` keeps them all. */
const PROBLEMS_IN_MESSAGE = 5;

/** "path: message; ..." of the first few problems, each clipped: a message stays short however many fields are wrong. */
function summarize(problems: readonly FieldProblem[]): string {
  const clip = (s: string) => (s.length > 200 ? `${s.slice(0, 200)}...` : s);
  const listed = problems.slice(0, PROBLEMS_IN_MESSAGE).map((p) => `${clip(p.path)}: ${clip(p.message)}`);
  if (problems.length > PROBLEMS_IN_MESSAGE) listed.push(`${problems.length - PROBLEMS_IN_MESSAGE} more`);
  return listed.join('; ');
}

/** A definition or input failed validation; `problems` name every bad field. */
export class ValidationError extends Error {
  readonly code = 'validation_failed';
  constructor(
    message: string,
    readonly problems: FieldProblem[],
  ) {
    super(`${message}: ${summarize(problems)}`);
  }
}

export class InvalidParamsError extends RelayError {
  readonly code = 'invalid_params';
  readonly retryable = false;
  readonly reason = 'invalid_params' as const;
  constructor(readonly problems: FieldProblem[]) {
    super(`invalid params: ${summarize(problems)}`);
  }
}

export class UnknownActionError extends RelayError {
  readonly code = 'unknown_action';
  readonly retryable = false;
  readonly reason = 'unknown_action' as const;
  constructor(readonly actionId: string) {
    super(`action "${actionId}" is not defined`);
  }
}

/** The third party answered with a status that is not 2xx. */
export class HttpStatusError extends RelayError {
  readonly code = 'http_status';
  readonly reason = 'http_status' as const;
  constructor(
    readonly status: number,
    readonly retryable: boolean,
    /** Delay asked by a Retry-After header, when one was given on 429 / 503. */
    readonly retryAfterMs: number | undefined,
  ) {
    super(`endpoint answered HTTP ${status}`);
  }
}

export class TimeoutError extends RelayError {
  readonly retryable = true;
  readonly reason = 'timeout' as const;
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export class NetworkError extends RelayError {
  readonly retryable = true;
  readonly reason = 'network' as const;
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** A 2xx whose body does not hold the declared response fields. */
export class ResponseInvalidError extends RelayError {
  readonly code = 'response_invalid';
  readonly retryable = false;
  readonly reason = 'response_invalid' as const;
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** Credentials could not be resolved or a token could not be fetched. */
export class AuthError extends RelayError {
  readonly code = 'auth';
  readonly reason = 'auth' as const;
  constructor(
    message: string,
    readonly retryable = false,
  ) {
    super(message);
  }
}

/** The egress policy refused the destination's address (loopback, private, metadata...): never retried. */
export class BlockedDestinationError extends RelayError {
  readonly code = 'blocked_destination';
  readonly retryable = false;
  readonly reason = 'blocked_destination' as const;
  constructor(
    message: string,
    /** The host as the URL names it. */
    readonly host?: string,
    /** The address that was refused. */
    readonly address?: string,
  ) {
    super(message);
  }
}

/** Turns anything thrown into an Error, so `catch (err: unknown)` can read `message`. */
export function coerceError(err: unknown): Error {
  if (err instanceof Error) return err;
  return new Error(typeof err === 'string' ? err : JSON.stringify(err));
}

/** The next rate-limit slot is further away than the action's maxWaitMs. */
export class CappedError extends RelayError {
  readonly code = 'capped';
  readonly retryable = false;
  readonly reason = 'capped' as const;
  constructor(
    readonly waitMs: number,
    maxWaitMs: number,
  ) {
    super(`the next rate-limit slot is ${waitMs} ms away, beyond maxWaitMs ${maxWaitMs}`);
  }
}

/** An action that came from ACTIONS_DIR: edited only through its file, which the next deploy would apply again. */
export class ManagedByFilesError extends Error {
  readonly code = 'managed_by_files';
  constructor(
    readonly actionId: string,
    /** The file the action comes from. */
    readonly file: string,
  ) {
    super(`action "${actionId}" is managed by ${file} (ACTIONS_DIR): change the file and reload the api (SIGHUP)`);
  }
}
