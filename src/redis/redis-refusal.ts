/**
 * Why Redis refused a command, in words for an API client, when the refusal is Redis's state
 * rather than the request's: out of memory, a read-only replica (mid-failover), writes refused
 * (too few replicas, a failing save), or unreachable.
 * Undefined for any other error. The API answers these 503 `redis_unavailable`.
 */
export function redisRefusal(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  const text = err.message;
  if (/\bOOM\b/.test(text)) {
    return 'Redis is out of memory (maxmemory reached, noeviction): nothing was written; retry once the backlog or results stream has been drained';
  }
  if (/\bREADONLY\b/.test(text)) return 'Redis is a read-only replica (a failover in progress): nothing was written; retry shortly';
  if (/\b(NOREPLICAS|MISCONF)\b/.test(text)) return `Redis refuses writes (${text}): nothing was written; retry shortly`;
  if (err.name === 'MaxRetriesPerRequestError' || /Connection is closed|ECONNREFUSED|ETIMEDOUT|Stream isn't writeable/.test(text)) {
    return `Redis is unreachable (${text}): nothing was written; retry shortly`;
  }
  return undefined;
}
