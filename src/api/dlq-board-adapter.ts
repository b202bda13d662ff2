import { BaseAdapter } from '@bull-board/api/dist/queueAdapters/base.js';
import type {
  AppJobScheduler,
  JobCounts,
  JobSchedulerUpdateResult,
  JobState,
  JobStatus,
  QueueJob,
  QueueJobJson,
  QueueMetrics,
  Status,
} from '@bull-board/api/dist/types.js';
import type { PartitionKeys, RedisClient } from '../redis/redis-connection.js';
import type { AttemptRecord, DeadLetterRecord } from '../queue/outcome-writer.js';

/** The name the dead letters go by on the board (and in its URLs). */
export const DLQ_BOARD_NAME = 'dead-letters';

/*
 * Dead letters are not a BullMQ queue but a zset (jobId by failedAt) and a hash of records, so
 * bull-board gets this adapter over them. It is read-only on purpose: the board's retry knows
 * nothing of `ratePerSecond` or dry runs, so a "retry all" over a large DLQ would flood the third
 * party that just failed. Replay stays with POST /v1/dlq/replay and `action-relay dlq replay`.
 */
const READ_ONLY = 'the dead-letter view is read-only: replay or purge with POST /v1/dlq/replay, /v1/dlq/purge or `action-relay dlq`';

function readOnly(): Promise<never> {
  return Promise.reject(new Error(READ_ONLY));
}

function ms(iso: string | undefined): number | null {
  if (iso === undefined) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

/** One line per attempt, as the board's Error and Logs tabs show it. */
export function describeAttempt(a: AttemptRecord): string {
  const outcome = a.response ? `HTTP ${a.response.status}` : a.error ? `${a.error.code}: ${a.error.message}` : 'no answer';
  return `attempt ${a.attempt} at ${a.startedAt}: ${a.request.method} ${a.request.url} -> ${outcome} (${a.durationMs} ms)`;
}

function failedReason(rec: DeadLetterRecord): string {
  const last = rec.attempts.at(-1);
  const detail = last?.error?.message ?? (rec.status !== null ? `HTTP ${rec.status}` : '');
  return detail ? `${rec.reason}: ${detail}` : rec.reason;
}

/** A dead-letter record in the shape of a bull-board job; it cannot be changed from the board. */
class DeadLetterJob implements QueueJob {
  readonly opts = {};

  constructor(private readonly rec: DeadLetterRecord) {}

  toJSON(): QueueJobJson {
    const { rec } = this;
    return {
      id: rec.jobId,
      name: rec.actionId,
      progress: 0,
      attemptsMade: rec.attempts.length,
      timestamp: ms(rec.job.enqueuedAt) ?? ms(rec.failedAt) ?? 0,
      processedOn: ms(rec.attempts[0]?.startedAt),
      finishedOn: ms(rec.failedAt),
      failedReason: failedReason(rec),
      stacktrace: rec.attempts.map(describeAttempt),
      // The Data tab shows both: the job as enqueued, then why and how it died (secrets already redacted).
      data: rec.job,
      returnvalue: { outcome: 'dead', reason: rec.reason, status: rec.status, failedAt: rec.failedAt, attempts: rec.attempts },
      opts: {},
    };
  }

  async getState(): Promise<JobState> {
    return 'failed';
  }

  promote = readOnly;
  remove = readOnly;
  retry = readOnly;
}

/** bull-board adapter listing one partition's dead letters, newest first, as the "failed" jobs of a read-only queue. */
export class DlqBoardAdapter extends BaseAdapter {
  /** `prefix` goes before the name on the board, `displayName` replaces it (a partition's, when there are several). */
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: Pick<PartitionKeys, 'dlq' | 'dlqRecords'>,
    opts: { prefix?: string; delimiter?: string; displayName?: string } = {},
  ) {
    super('bullmq', {
      displayName: 'Dead letters',
      ...opts,
      readOnlyMode: true,
      description: 'Dead-letter records (read-only). Replay: POST /v1/dlq/replay or `action-relay dlq replay`.',
    });
  }

  private async records(ids: string[]): Promise<DeadLetterRecord[]> {
    if (ids.length === 0) return [];
    const raw = await this.redis.hmget(this.keys.dlqRecords, ...ids);
    // A record trimmed or replayed between the two reads is simply left out.
    return raw.flatMap((r) => (r === null ? [] : [JSON.parse(r) as DeadLetterRecord]));
  }

  getName(): string {
    return `${this.prefix}${DLQ_BOARD_NAME}`;
  }

  getStatuses(): Status[] {
    return ['latest', 'failed'];
  }

  getJobStatuses(): JobStatus[] {
    return ['failed'];
  }

  async getJobCounts(): Promise<JobCounts> {
    return { failed: await this.redis.zcard(this.keys.dlq) };
  }

  async getJobs(statuses: JobStatus[], start = 0, end = -1): Promise<QueueJob[]> {
    if (!statuses.includes('failed')) return [];
    const ids = await this.redis.zrevrange(this.keys.dlq, start, end);
    return (await this.records(ids)).map((rec) => new DeadLetterJob(rec));
  }

  async getJob(id: string): Promise<QueueJob | null> {
    const [rec] = await this.records([id]);
    return rec ? new DeadLetterJob(rec) : null;
  }

  async getJobLogs(id: string): Promise<string[]> {
    const [rec] = await this.records([id]);
    if (!rec) return [];
    return [
      ...rec.attempts.map(describeAttempt),
      `dead at ${rec.failedAt}: ${failedReason(rec)}`,
      `replay: POST /v1/dlq/replay {"jobIds":["${rec.jobId}"]}  or  action-relay dlq replay ${rec.jobId}`,
    ];
  }

  async getMetrics(): Promise<QueueMetrics> {
    return { meta: { count: 0, prevTS: 0, prevCount: 0 }, data: [], count: 0 };
  }

  getRedisInfo(): Promise<string> {
    return this.redis.info();
  }

  async isPaused(): Promise<boolean> {
    return false;
  }

  async getJobSchedulers(): Promise<Omit<AppJobScheduler, 'queueName'>[]> {
    return [];
  }

  async getJobSchedulersCount(): Promise<number> {
    return 0;
  }

  async getGlobalConcurrency(): Promise<number | null> {
    return null;
  }

  // Everything below changes a queue; bull-board never calls it on a read-only one (405), and
  // if it ever did, it fails rather than pretending.
  clean(): Promise<void> {
    return readOnly();
  }
  addJob(): Promise<QueueJob> {
    return readOnly();
  }
  pause(): Promise<void> {
    return readOnly();
  }
  resume(): Promise<void> {
    return readOnly();
  }
  empty(): Promise<void> {
    return readOnly();
  }
  obliterate(): Promise<void> {
    return readOnly();
  }
  promoteAll(): Promise<void> {
    return readOnly();
  }
  removeJobScheduler(): Promise<boolean> {
    return readOnly();
  }
  updateJobScheduler(): Promise<JobSchedulerUpdateResult> {
    return readOnly();
  }
  runJobSchedulerNow(): Promise<QueueJob | 'not-found'> {
    return readOnly();
  }
  setGlobalConcurrency(): Promise<void> {
    return readOnly();
  }
}
