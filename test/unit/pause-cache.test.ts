import { DelayedError, type Job } from 'bullmq';
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { compileAction, parseActionDefinition } from '../../src/actions/compile-action.js';
import type { LoadedAttempt, PipelineContext } from '../../src/delivery/attempt/attempt.js';
import { passGates, rememberPause } from '../../src/delivery/attempt/gates.js';
import type { RateLimiter } from '../../src/delivery/rate-limiter.js';

// The back-pressure pause cache of actions without a
// rateLimit (one read of the pause per key at a time, gates.ts). A Retry-After that this very
// process learns while a read of the pause is under way must not be forgotten when that read,
// sent before the pause was written, comes back with the old answer.

const action = compileAction(parseActionDefinition({ id: 'p', name: 'p', endpoint: { url: 'http://127.0.0.1:9/x', method: 'POST' } }), {
  version: 1,
  userAgent: 'test',
});

function fakeJob(id: string): Job {
  return {
    id,
    name: 'p',
    opts: {},
    data: {},
    timestamp: 0,
    attemptsMade: 0,
    moveToDelayed: async () => undefined,
  } as unknown as Job;
}

function attemptOf(id: string): LoadedAttempt {
  // Cast: only the fields the gates read (the record may grow fields of its own).
  return {
    job: fakeJob(id),
    jobId: id,
    number: 1,
    startedAt: 0,
    partition: {} as never,
    token: 't',
    action,
    data: { params: {}, context: {} } as never,
    scope: { params: {}, context: {}, job: { id, attempt: 1, idempotencyKey: id } },
    probe: false,
    prepared: undefined,
    res: undefined,
    log: () => pino({ level: 'silent' }),
  } as unknown as LoadedAttempt;
}

describe('back-pressure pause cache (actions without a rateLimit)', () => {
  it('keeps a Retry-After pause learned while a read of the pause is under way', async () => {
    let now = 1_000_000;
    let answerRead: (until: number) => void = () => undefined;
    const limiter = {
      pausedUntil: () => new Promise<number>((resolve) => (answerRead = resolve)),
      pushBack: async () => undefined,
    } as unknown as RateLimiter;
    const ctx = {
      connection: { evalsha: async () => 1, eval: async () => 1 },
      rateLimiter: limiter,
      circuitBreaker: undefined,
      events: { emit: () => undefined },
      now: () => now,
      pauses: new Map(),
    } as unknown as PipelineContext;

    // Job 1 starts: no pause known, so the pause is read from Redis (the GET is in flight).
    const first = passGates(ctx, attemptOf('j1'));
    expect(first).toBeInstanceOf(Promise);

    // Meanwhile another job of the same key got a 429 with Retry-After: 30 s. finishFailed's
    // pauseKey remembers it in the cache and writes it to Redis (after the GET above).
    now += 1;
    const until = now + 30_000;
    rememberPause(ctx, action.limitKey, until, now);

    // The GET, sent before the pause was written, answers "no pause".
    answerRead(0);
    // The job that waited for the read is deferred too: by the time the answer came, this process
    // knew of the pause.
    await expect(first).rejects.toBeInstanceOf(DelayedError);

    // A job that starts now, 10 ms into the 30 s pause this process itself was told of.
    now += 10;
    const gated = passGates(ctx, attemptOf('j2'));
    const outcome =
      gated === undefined
        ? 'sent at once'
        : await gated.then(
            () => 'sent',
            (e: unknown) => (e instanceof DelayedError ? 'deferred' : String(e)),
          );
    expect(outcome, 'a job starting during the pause this process just learned of').toBe('deferred');
    expect(ctx.pauses.get(action.limitKey)?.until, 'the cached pause').toBe(until);
  });
});
