/**
 * Every job id is a UUID (the producer's random, a replay's derived from its dead letter). Anything
 * else names no job, and could name one of BullMQ's own keys beside the job hashes (`meta`,
 * `events`, `id`...): the API answers 404 for it without asking Redis.
 */
const JOB_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isJobId(value: string): boolean {
  return JOB_ID.test(value);
}
