/**
 * The journey engine's side of action-relay, end to end (docs/journey-engine.md walks through it):
 * define an action from code, create the results consumer group before the first enqueue,
 * enqueue with idempotency keys, read / ack the results (claiming what a crashed reader left
 * pending), and follow a dead job to its replay's delivery.
 *
 * Run it next to a worker and a receiver (from the repository, Redis on 127.0.0.1:6379):
 *   npx tsx workers/action-relay.ts receiver --port 4010 &
 *   EGRESS_ALLOW_HOSTS=127.0.0.1 npx tsx workers/action-relay.ts worker &
 *   RECEIVER_URL=http://127.0.0.1:4010 npx tsx examples/journey-engine.ts
 */
// In your project: import { ... } from 'action-relay';
import { createRelayContext, loadConfig, type ActionDefinitionInput, type RelayContext } from '../src/index.js';

/** The Redis client of a context (ioredis, standalone or cluster). */
type RedisClient = RelayContext['redis'];

/** The consumer group of the journey engine on each results stream. */
export const GROUP = 'journey-engine';

/** One results entry, its fields decoded. */
export interface ResultEntry {
  /** The stream entry id (what XACK takes). */
  id: string;
  stream: string;
  jobId: string;
  actionId: string;
  outcome: 'delivered' | 'dead';
  /** The last HTTP status; null when none was received. */
  status: number | null;
  /** The dead-letter reason; empty when delivered. */
  reason: string;
  attempts: number;
  durationMs: number;
  /** The job's context as enqueued: where the journey continues. */
  context: Record<string, unknown>;
  /** The captured response fields. */
  response: Record<string, unknown>;
  /** The job's idempotency key (its id when none was given); kept by a replay. */
  idempotencyKey: string;
  /** On a replay's entry: the dead job it came from. */
  replayOf?: string;
}

/** Decodes the flat field list of a stream entry (every value is a string). */
export function decodeEntry(stream: string, id: string, flat: string[]): ResultEntry {
  const f = new Map<string, string>();
  for (let i = 0; i + 1 < flat.length; i += 2) f.set(flat[i] as string, flat[i + 1] as string);
  const json = (name: string) => JSON.parse(f.get(name) || '{}') as Record<string, unknown>;
  const status = f.get('status');
  const replayOf = f.get('replayOf');
  return {
    id,
    stream,
    jobId: f.get('jobId') ?? '',
    actionId: f.get('actionId') ?? '',
    outcome: f.get('outcome') === 'delivered' ? 'delivered' : 'dead',
    status: status ? Number(status) : null,
    reason: f.get('reason') ?? '',
    attempts: Number(f.get('attempts') ?? 0),
    durationMs: Number(f.get('durationMs') ?? 0),
    context: json('context'),
    response: json('response'),
    idempotencyKey: f.get('idempotencyKey') ?? f.get('jobId') ?? '',
    ...(replayOf ? { replayOf } : {}),
  };
}

/**
 * Creates the group on a results stream, reading from the entries appended after now: call it
 * before the first enqueue, or the results of the first jobs are not the group's to read.
 * MKSTREAM creates the stream when no job has ended yet; an existing group is left as it is.
 */
export async function createResultsGroup(redis: RedisClient, stream: string): Promise<void> {
  try {
    await redis.xgroup('CREATE', stream, GROUP, '$', 'MKSTREAM');
  } catch (err: unknown) {
    if (!(err instanceof Error) || !err.message.includes('BUSYGROUP')) throw err;
  }
}

type RawEntries = [id: string, fields: string[]][];

/**
 * One read of a results stream by `consumer`: first the entries another consumer of the group
 * read but never acknowledged for `minIdleMs` (it crashed), then new ones (waiting up to
 * `blockMs`). Entries stay pending until `ack`: a crash before it hands them to the next reader.
 */
export async function readResults(
  redis: RedisClient,
  stream: string,
  consumer: string,
  opts: { count?: number; blockMs?: number; minIdleMs?: number } = {},
): Promise<ResultEntry[]> {
  const count = opts.count ?? 500;
  const [, claimed] = (await redis.xautoclaim(stream, GROUP, consumer, opts.minIdleMs ?? 60_000, '0-0', 'COUNT', count)) as [
    string,
    RawEntries,
  ];
  if (claimed.length > 0) return claimed.map(([id, fields]) => decodeEntry(stream, id, fields));
  const read = (await redis.xreadgroup('GROUP', GROUP, consumer, 'COUNT', count, 'BLOCK', opts.blockMs ?? 1000, 'STREAMS', stream, '>')) as
    [string, RawEntries][] | null;
  return (read?.[0]?.[1] ?? []).map(([id, fields]) => decodeEntry(stream, id, fields));
}

/** Acknowledges entries once the journey has acted on them. */
export async function ack(redis: RedisClient, entries: ResultEntry[]): Promise<void> {
  for (const e of entries) await redis.xack(e.stream, GROUP, e.id);
}

/** The SMS action, defined in code: `satisfies` makes a wrong field a compile error. */
export function smsAction(receiverUrl: string) {
  return {
    id: 'journey_sms',
    name: 'Journey SMS',
    endpoint: { url: receiverUrl, path: '/sms/{{params.phone}}', method: 'POST', timeoutMs: 5000 },
    parameters: { phone: { type: 'string', required: true }, text: { type: 'string', required: true } },
    body: { to: '{{params.phone}}', text: '{{params.text}}', journey: '{{context.journeyId}}' },
    retry: { maxAttempts: 3, backoff: { type: 'fixed', delayMs: 200, maxDelayMs: 200 } },
  } satisfies ActionDefinitionInput;
}

export interface ExampleOptions {
  redisUrl: string;
  prefix?: string;
  receiverUrl: string;
  /** Phones to text, one job each. */
  phones: string[];
  /** Replay the dead jobs once (as an operator would after fixing the cause) and wait for their replays. */
  replayDead?: boolean;
  log?: (line: string) => void;
  /** Give up after this long. @defaultValue 30000 */
  timeoutMs?: number;
}

export interface ExampleResult {
  /** The journey step each job belongs to, by idempotency key, and how it ended last. */
  steps: Map<string, ResultEntry>;
  /** Dead ids and the replays that followed them. */
  replays: { from: string; jobId: string }[];
}

/** Defines the action, enqueues one job per phone and follows every one to its end. */
export async function runExample(opts: ExampleOptions): Promise<ExampleResult> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const config = loadConfig({
    REDIS_URL: opts.redisUrl,
    ACTION_RELAY_PREFIX: opts.prefix ?? 'action-relay',
    LOG_LEVEL: 'warn',
    // The receiver of this example listens on loopback, which the egress policy refuses by default.
    EGRESS_ALLOW_HOSTS: new URL(opts.receiverUrl).hostname,
  });
  const ctx: RelayContext = await createRelayContext(config, { processMetrics: false });
  const redis = ctx.redis;
  try {
    // 1. One group per results stream (one stream per partition), before the first enqueue.
    const streams = ctx.keys.partitions.map((p) => p.results);
    for (const stream of streams) await createResultsGroup(redis, stream);

    // 2. The action, from code.
    const saved = await ctx.store.put(smsAction(opts.receiverUrl), { keepUnchanged: true });
    log(`action ${saved.id} v${saved.version}${saved.unchanged ? ' (unchanged)' : ''}`);

    // 3. One job per journey step; the idempotency key names the step, so a retried enqueue is one job.
    const steps = new Map<string, ResultEntry>();
    const waiting = new Set<string>();
    for (const [n, phone] of opts.phones.entries()) {
      const idempotencyKey = `journey-42:node-7:profile-${n}`;
      const { jobId, deduplicated } = await ctx.producer.enqueue({
        actionId: 'journey_sms',
        params: { phone, text: `Hello ${n}` },
        context: { journeyId: 'journey-42', nodeId: 'node-7', profileId: `profile-${n}` },
        idempotencyKey,
      });
      waiting.add(idempotencyKey);
      log(`enqueued ${jobId} for ${idempotencyKey}${deduplicated ? ' (already enqueued)' : ''}`);
    }

    // 4. Read until every step has ended for good; one reader per stream.
    const replays: { from: string; jobId: string }[] = [];
    const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
    while (waiting.size > 0) {
      if (Date.now() > deadline) throw new Error(`no result yet for ${[...waiting].join(', ')}`);
      const batches = await Promise.all(streams.map((s) => readResults(redis, s, 'engine-1', { blockMs: 500 })));
      for (const entry of batches.flat()) {
        steps.set(entry.idempotencyKey, entry);
        const via = entry.replayOf ? ` (replay of ${entry.replayOf})` : '';
        log(`${entry.idempotencyKey}: ${entry.outcome} ${entry.status ?? '-'} ${entry.reason} after ${entry.attempts} attempt(s)${via}`);
        if (entry.outcome === 'delivered' || !opts.replayDead || entry.replayOf) waiting.delete(entry.idempotencyKey);
      }
      await ack(redis, batches.flat());
      // 5. A dead step waits for its replay: an operator fixes the cause and replays (here, at once).
      const dead = batches.flat().filter((e) => e.outcome === 'dead' && !e.replayOf && opts.replayDead);
      if (dead.length > 0) {
        const recs = await ctx.deadLetters.getMany(dead.map((e) => e.jobId));
        replays.push(...(await ctx.deadLetters.replay(recs, {})));
      }
    }
    return { steps, replays };
  } finally {
    await ctx.close();
  }
}

// Run directly: `npx tsx examples/journey-engine.ts`.
if (process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/\\/g, '/'))) {
  await runExample({
    redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    receiverUrl: process.env.RECEIVER_URL ?? 'http://127.0.0.1:4010',
    phones: ['+33600000001', '+33600000002', '+33600000003'],
  });
}
