/*
 * The console talks to the API of the page's own origin. The session cookie (HttpOnly) rides along
 * by itself; the header below is what the API asks of a cookie-authenticated request that changes
 * something, which a page of another origin cannot send.
 */
export const CONSOLE_HEADER = 'x-action-relay-console';

export interface FieldProblem {
  path: string;
  message: string;
}

/** An API error answer: `{ error: { code, message, details? } }`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: unknown,
  ) {
    super(message);
  }
  /** The `{ path, message }` list of a validation error, or none. */
  get problems(): FieldProblem[] {
    return Array.isArray(this.details) ? (this.details as FieldProblem[]) : [];
  }
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (method !== 'GET') headers[CONSOLE_HEADER] = '1';
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  if (res.status === 401 && !path.startsWith('/console/session')) {
    // The session expired or was never opened: back to the sign-in page.
    window.location.assign('/console/login');
  }
  const text = await res.text();
  const data = text ? (JSON.parse(text) as unknown) : undefined;
  if (!res.ok) {
    const err = (data as { error?: { code?: string; message?: string; details?: unknown } } | undefined)?.error;
    throw new ApiError(res.status, err?.code ?? 'http_' + res.status, err?.message ?? res.statusText, err?.details);
  }
  return data as T;
}

export const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err));

// ---- Answer shapes the console reads (the API's OpenAPI document at /docs has them all).

export interface Counts {
  delivered: number;
  dead: number;
  retries: number;
}

export interface ActionRow {
  id: string;
  name: string;
  version: number;
  method: string;
  url: string;
  limitKey: string;
  circuit: 'closed' | 'open' | 'half-open';
  last15m: Counts;
  lastHour: Counts;
}

export interface Session {
  auth: 'token' | 'none';
  scopes: string[];
}

export interface StoredAction {
  id: string;
  version: number;
  updatedAt: string;
  definition: Record<string, unknown>;
}

export interface DescribedRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: unknown;
}

export interface TestResult {
  request: DescribedRequest;
  response: { status: number; headers: Record<string, string | string[]>; body: unknown; truncated: boolean; note?: string };
  durationMs: number;
}

export interface DlqSummary {
  jobId: string;
  actionId: string;
  reason: string;
  status: number | null;
  attempts: number;
  failedAt: string;
}

export interface AttemptRecord {
  attempt: number;
  startedAt: string;
  durationMs: number;
  request: { method: string; url: string; headers: Record<string, string> };
  response?: { status: number; headers: Record<string, string | string[]>; body: string };
  error?: { code: string; message: string };
}

export interface DeadLetterRecord {
  jobId: string;
  actionId: string;
  job: { actionId: string; params: Record<string, unknown>; context: Record<string, unknown>; idempotencyKey?: string; enqueuedAt: string };
  reason: string;
  status: number | null;
  failedAt: string;
  attempts: AttemptRecord[];
}

export interface DlqFilter {
  actionId?: string;
  reason?: string;
  status?: number;
  since?: string;
  until?: string;
}

export interface JobState {
  jobId: string;
  state: 'waiting' | 'delayed' | 'active' | 'delivered' | 'dead' | 'unknown';
  attempts?: number;
  error?: { reason: string; status: number | null; message: string };
}

/** The new job ids of a replay answer, whichever shape it has (`jobIds`, or `replays: [{ from, jobId }]`). */
export function replayedJobIds(answer: { jobIds?: string[]; replays?: { jobId: string }[] }): string[] {
  return answer.replays?.map((r) => r.jobId) ?? answer.jobIds ?? [];
}
