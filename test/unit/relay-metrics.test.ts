import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createDeliveryEvents, type DeliveryEventMap } from '../../src/delivery/delivery-events.js';
import { ValidationError } from '../../src/errors/errors.js';
import { observeDeliveryMetrics } from '../../src/metrics/delivery-observer.js';
import { instrumentProducer } from '../../src/metrics/instrumented-producer.js';
import { DEAD_REASONS, RETRY_REASONS, STATUS_CLASSES, createRelayMetrics } from '../../src/metrics/relay-metrics.js';
import { circuitOf, groupLag, type ScrapeSnapshot } from '../../src/metrics/scrape-reader.js';
import type { Producer } from '../../src/queue/producer.js';

const lines = async (registry: Registry, name: string) =>
  (await registry.metrics()).split('\n').filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));

describe('counters from zero', () => {
  it('creates every series of an action at 0 when it is compiled, once', async () => {
    const m = createRelayMetrics(new Registry(), { defaults: false });
    m.initAction('acme_sms');
    m.initAction('acme_sms');
    expect(await lines(m.registry, 'action_relay_jobs_total')).toEqual([
      'action_relay_jobs_total{action="acme_sms",outcome="delivered"} 0',
      'action_relay_jobs_total{action="acme_sms",outcome="dead"} 0',
    ]);
    expect(await lines(m.registry, 'action_relay_dead_letters_total')).toHaveLength(DEAD_REASONS.length);
    expect(await lines(m.registry, 'action_relay_dead_letters_total')).toContain(
      'action_relay_dead_letters_total{action="acme_sms",reason="capped"} 0',
    );
    expect(await lines(m.registry, 'action_relay_http_requests_total')).toHaveLength(STATUS_CLASSES.length);
    expect(await lines(m.registry, 'action_relay_retries_total')).toHaveLength(RETRY_REASONS.length);
    // The first event moves the series that already exists.
    m.deadLetters.inc({ action: 'acme_sms', reason: 'capped' });
    expect(await lines(m.registry, 'action_relay_dead_letters_total')).toContain(
      'action_relay_dead_letters_total{action="acme_sms",reason="capped"} 1',
    );
  });

  it('exports build info with the version and the Node.js version', async () => {
    const m = createRelayMetrics(new Registry(), { defaults: false, version: '9.9.9' });
    expect(await lines(m.registry, 'action_relay_build_info')).toEqual([
      `action_relay_build_info{version="9.9.9",node="${process.version}"} 1`,
    ]);
  });
});

describe('deferrals', () => {
  it('count as rate limited, and their wait as a rate-limit wait, only when the job waits for a rate-limit slot', async () => {
    const m = createRelayMetrics(new Registry(), { defaults: false });
    const events = createDeliveryEvents();
    const off = observeDeliveryMetrics(events, m);
    const defer = (cause: DeliveryEventMap['deferred']['cause']) =>
      events.emit('deferred', { actionId: 'acme_sms', jobId: `j-${cause}`, cause, until: 0, waitMs: 500 });
    for (const cause of ['circuit', 'pause', 'permit'] as const) defer(cause);
    expect(await lines(m.registry, 'action_relay_rate_limited_total')).toEqual([]);
    expect(await lines(m.registry, 'action_relay_rate_limit_wait_seconds_count')).toEqual([]);
    defer('rate_limit');
    expect(await lines(m.registry, 'action_relay_rate_limited_total')).toEqual(['action_relay_rate_limited_total{action="acme_sms"} 1']);
    expect(await lines(m.registry, 'action_relay_rate_limit_wait_seconds_count')).toEqual([
      'action_relay_rate_limit_wait_seconds_count{action="acme_sms"} 1',
    ]);
    off();
  });
});

describe('scrape-time gauges', () => {
  const snapshot = (s: Partial<ScrapeSnapshot>): (() => Promise<ScrapeSnapshot>) => {
    return async () => ({ redisUp: true, failed: [], ...s });
  };

  it('are dropped when their read failed, and count the failure by operation', async () => {
    let current: ScrapeSnapshot = {
      redisUp: true,
      failed: [],
      partitions: [{ counts: { waiting: 2, active: 1, delayed: 0, dlq: 5 }, waitingInLine: 4 }],
      oldestWaitingSeconds: [12],
      limitKeys: [{ key: 'k', circuit: 'open', reservedSlots: 3, pausedSeconds: 0 }],
    };
    const m = createRelayMetrics(new Registry(), { defaults: false, scrape: async () => current });
    expect(await lines(m.registry, 'action_relay_queue_jobs')).toContain('action_relay_queue_jobs{state="dlq"} 5');
    expect(await lines(m.registry, 'action_relay_oldest_waiting_seconds')).toEqual(['action_relay_oldest_waiting_seconds 12']);
    expect(await lines(m.registry, 'action_relay_ordering_waiting_jobs')).toEqual(['action_relay_ordering_waiting_jobs{partition="0"} 4']);
    expect(await lines(m.registry, 'action_relay_circuit')).toEqual([
      'action_relay_circuit{key="k",state="closed"} 0',
      'action_relay_circuit{key="k",state="open"} 1',
      'action_relay_circuit{key="k",state="half_open"} 0',
    ]);
    expect(await lines(m.registry, 'action_relay_circuit_state')).toEqual(['action_relay_circuit_state{key="k"} 1']);

    current = { redisUp: false, failed: ['ping'] };
    const text = (await m.registry.metrics()).split('\n');
    const of = (name: string) => text.filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
    expect(of('action_relay_redis_up')).toEqual(['action_relay_redis_up 0']);
    expect(of('action_relay_queue_jobs')).toEqual([]);
    expect(of('action_relay_ordering_waiting_jobs')).toEqual([]);
    expect(of('action_relay_oldest_waiting_seconds')).toEqual([]);
    expect(of('action_relay_circuit')).toEqual([]);
    expect(of('action_relay_redis_errors_total')).toContain('action_relay_redis_errors_total{op="ping"} 1');
    // Every scrape of the outage counts again.
    expect(await lines(m.registry, 'action_relay_redis_errors_total')).toContain('action_relay_redis_errors_total{op="ping"} 2');
  });

  it('export consumer lag only where Redis can tell it', async () => {
    const m = createRelayMetrics(new Registry(), {
      defaults: false,
      scrape: snapshot({
        results: [
          {
            length: 10,
            groups: [
              { name: 'journeys', lag: 4 },
              { name: 'unknown', lag: null },
            ],
          },
        ],
      }),
    });
    expect(await lines(m.registry, 'action_relay_results_consumer_lag')).toEqual([
      'action_relay_results_consumer_lag{partition="0",group="journeys"} 4',
    ]);
  });
});

describe('reading Redis answers', () => {
  it('takes the lag of XINFO GROUPS, or the whole stream for a group that has read nothing', () => {
    expect(groupLag(['name', 'g', 'last-delivered-id', '5-0', 'lag', 3], 10)).toEqual({ name: 'g', lag: 3 });
    expect(groupLag(['name', 'g', 'last-delivered-id', '0-0', 'lag', null], 10)).toEqual({ name: 'g', lag: 10 });
    expect(groupLag(['name', 'g', 'last-delivered-id', '5-0', 'lag', null], 10)).toEqual({ name: 'g', lag: null });
  });

  it('reads a circuit past its openUntil as half-open: the next job probes', () => {
    expect(circuitOf(null, 0, 1000)).toBe('closed');
    expect(circuitOf('open', 2000, 1000)).toBe('open');
    expect(circuitOf('open', 1000, 1000)).toBe('half_open');
    expect(circuitOf('half', 0, 1000)).toBe('half_open');
  });
});

describe('enqueue RED', () => {
  it('counts each job offered by result and times each call', async () => {
    const m = createRelayMetrics(new Registry(), { defaults: false });
    let n = 0;
    const producer: Producer = {
      enqueue: async (input) => {
        if (input.actionId === 'bad') throw new ValidationError('invalid job', [{ path: 'params.x', message: 'required' }]);
        if (input.actionId === 'down') throw new Error('redis down');
        return { jobId: String(n++), deduplicated: input.idempotencyKey === 'seen' };
      },
      enqueueMany: async (inputs) =>
        inputs.map((_, i) =>
          i === 0 ? { error: { code: 'validation_failed', message: 'x', details: [] } } : { jobId: String(n++), deduplicated: false },
        ),
    };
    const p = instrumentProducer(producer, m);
    await p.enqueue({ actionId: 'a', params: {}, context: {} });
    await p.enqueue({ actionId: 'a', params: {}, context: {}, idempotencyKey: 'seen' });
    await expect(p.enqueue({ actionId: 'bad', params: {}, context: {} })).rejects.toThrow(ValidationError);
    await expect(p.enqueue({ actionId: 'down', params: {}, context: {} })).rejects.toThrow('redis down');
    await p.enqueueMany([{}, {}, {}]);
    expect(await lines(m.registry, 'action_relay_enqueue_total')).toEqual([
      'action_relay_enqueue_total{result="accepted"} 3',
      'action_relay_enqueue_total{result="deduplicated"} 1',
      'action_relay_enqueue_total{result="invalid"} 2',
      'action_relay_enqueue_total{result="error"} 1',
    ]);
    expect(await lines(m.registry, 'action_relay_enqueue_duration_seconds_count')).toEqual([
      'action_relay_enqueue_duration_seconds_count{kind="single"} 4',
      'action_relay_enqueue_duration_seconds_count{kind="batch"} 1',
    ]);
  });
});
