// `--sections cluster`: how delivery throughput and Redis work spread with QUEUE_PARTITIONS and
// worker processes over a local 3-master Redis Cluster (docs/scaling.md). The masters, the workers
// and the sink share this machine's cores: read the split of Redis work, not absolute throughput.
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { hashTaggedPrefix, loadConfig } from '../src/config/config.js';
import { createRelayContext } from '../src/context/relay-context.js';
import { createLogger } from '../src/logger.js';
import { relayKeys } from '../src/redis/redis-connection.js';
import { startLocalCluster } from '../test/support/local-cluster.js';
import { scriptArgs, type Lab } from './lab.js';
import { processesCpuSeconds, redisCommandsProcessed, redisCpuSeconds } from './proc-stats.js';

export interface ClusterRun {
  partitions: number;
  workers: number;
  deliveriesPerSecond: number;
  workerCpuUsPerDelivery: number;
  /** Redis CPU microseconds per delivery, per master. */
  redisCpuPerMaster: number[];
  /** Redis commands per delivery (inside scripts included), per master: the work itself, free of CPU noise. */
  redisCommandsPerMaster: number[];
}

export interface ClusterResult {
  jobs: number;
  keys: number;
  masters: number;
  /** Prefixes chosen so that the partitions hash to different masters. */
  spread: boolean;
  /** The median run (by deliveries/s) of each configuration, and every run's deliveries/s. */
  rows: (ClusterRun & { runsPerSecond: number[] })[];
}

/** partitions x worker processes, as measured by default. */
export const CLUSTER_CONFIGS: [number, number][] = [
  [1, 1],
  [3, 1],
  [1, 2],
  [3, 2],
];

interface Masters {
  nodes: string[];
  /** Runs commands on one master directly (no cluster routing). */
  onNode<T>(node: string, fn: (r: Redis) => Promise<T>): Promise<T>;
  masterOfKey(key: string): Promise<string>;
}

const log = (line: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);

/** The hash-tagged BullMQ prefix of each partition. */
const partitionTags = (prefix: string, partitions: number) =>
  relayKeys(hashTaggedPrefix(prefix), partitions).partitions.map((p) => p.bullPrefix);

/** A key prefix whose partitions hash to as many different masters as there can be. */
async function spreadPrefix(masters: Masters, partitions: number): Promise<string> {
  for (;;) {
    const prefix = `cl-${randomUUID().slice(0, 8)}`;
    const used = new Set(await Promise.all(partitionTags(prefix, partitions).map((t) => masters.masterOfKey(t))));
    if (used.size >= Math.min(partitions, masters.nodes.length)) return prefix;
  }
}

async function perMaster(masters: Masters): Promise<{ cpu: number; commands: number }[]> {
  return Promise.all(
    masters.nodes.map((node) =>
      masters.onNode(node, async (r) => ({ cpu: await redisCpuSeconds(r), commands: await redisCommandsProcessed(r) })),
    ),
  );
}

/** Removes one run's keys, master by master (one key per command: the keys are in several slots). */
async function removeKeys(masters: Masters, prefix: string): Promise<void> {
  for (const node of masters.nodes) {
    await masters.onNode(node, async (r) => {
      let cursor = '0';
      do {
        const [next, found] = await r.scan(cursor, 'MATCH', `{${prefix}[:}]*`, 'COUNT', 1000);
        cursor = next;
        await Promise.all(found.map((k) => r.unlink(k)));
      } while (cursor !== '0');
    });
  }
}

/** One run: jobs queued over `keys` actions with distinct non-binding rate limits, then delivered by `workers` processes. */
async function measure(lab: Lab, masters: Masters, partitions: number, workers: number, jobs: number, keys: number): Promise<ClusterRun> {
  const prefix = await spreadPrefix(masters, partitions);
  const env = {
    REDIS_CLUSTER_NODES: masters.nodes.join(','),
    ACTION_RELAY_PREFIX: prefix,
    QUEUE_PARTITIONS: String(partitions),
    METRICS_PORT: '0',
    LOG_LEVEL: 'warn',
    EGRESS_ALLOW_PRIVATE: 'true',
    WORKER_CONCURRENCY: '64',
  };
  const ctx = await createRelayContext(loadConfig(env), { logger: createLogger('warn'), processMetrics: false });
  try {
    for (let k = 0; k < keys; k++) {
      await ctx.store.put({
        id: `a${k}`,
        name: `a${k}`,
        endpoint: { url: lab.sink.url.replace(/\/deliver$/, ''), path: '/deliver', method: 'POST' },
        parameters: { n: { type: 'integer', required: true } },
        body: { n: '{{params.n}}', text: 'x'.repeat(400) },
        rateLimit: { key: `third-party-${k}`, max: 1_000_000, perMs: 1000 },
      });
    }
    for (let i = 0; i < jobs; i += 1000) {
      const batch = Array.from({ length: Math.min(1000, jobs - i) }, (_, j) => ({ actionId: `a${(i + j) % keys}`, params: { n: i + j } }));
      await ctx.producer.enqueueMany(batch);
    }
    const done = async () => (await Promise.all(ctx.keys.partitions.map((p) => ctx.redis.xlen(p.results)))).reduce((a, b) => a + b, 0);
    const children = Array.from({ length: workers }, () => lab.spawnChild([...scriptArgs('action-relay'), 'worker'], env));
    try {
      // From 5 % to 95 % delivered: leaves out worker start-up and the tail.
      const [from, to] = [Math.floor(jobs * 0.05), Math.ceil(jobs * 0.95)];
      let t0 = 0;
      let cpu0 = 0;
      let redis0: { cpu: number; commands: number }[] = [];
      const deadline = Date.now() + Math.max(120_000, jobs * 20);
      for (;;) {
        const n = await done();
        if (!t0 && n >= from) {
          t0 = performance.now();
          cpu0 = processesCpuSeconds(children.map((c) => c.pid as number));
          redis0 = await perMaster(masters);
        }
        if (t0 && n >= to) break;
        if (Date.now() > deadline) throw new Error(`cluster: ${n} of ${jobs} jobs delivered before the deadline`);
        await new Promise((r) => setTimeout(r, 20));
      }
      const seconds = (performance.now() - t0) / 1000;
      const workerCpu = processesCpuSeconds(children.map((c) => c.pid as number)) - cpu0;
      const redis1 = await perMaster(masters);
      const delivered = to - from;
      return {
        partitions,
        workers,
        deliveriesPerSecond: delivered / seconds,
        workerCpuUsPerDelivery: (workerCpu / delivered) * 1e6,
        redisCpuPerMaster: redis1.map((v, i) => ((v.cpu - (redis0[i]?.cpu ?? 0)) / delivered) * 1e6),
        redisCommandsPerMaster: redis1.map((v, i) => (v.commands - (redis0[i]?.commands ?? 0)) / delivered),
      };
    } finally {
      await Promise.all(children.map((c) => lab.endChild(c)));
    }
  } finally {
    await ctx.close();
    await removeKeys(masters, prefix);
  }
}

export async function clusterSection(
  lab: Lab,
  opts: { jobs: number; keys: number; runs: number; configs?: [number, number][] },
): Promise<ClusterResult> {
  const cluster = await startLocalCluster(3);
  const masters: Masters = {
    nodes: cluster.nodes,
    onNode: (node, fn) => cluster.onNode(fn, node),
    masterOfKey: async (key) => cluster.masterOf(await cluster.keySlot(key)),
  };
  try {
    const rows: ClusterResult['rows'] = [];
    for (const [partitions, workers] of opts.configs ?? CLUSTER_CONFIGS) {
      const runs: ClusterRun[] = [];
      for (let i = 0; i < opts.runs; i++) runs.push(await measure(lab, masters, partitions, workers, opts.jobs, opts.keys));
      const sorted = [...runs].sort((a, b) => a.deliveriesPerSecond - b.deliveriesPerSecond);
      const chosen = sorted[Math.floor(sorted.length / 2)] as ClusterRun;
      rows.push({ ...chosen, runsPerSecond: runs.map((r) => r.deliveriesPerSecond) });
      log(`cluster: ${partitions} partition(s), ${workers} worker(s): ${runs.map((r) => Math.round(r.deliveriesPerSecond)).join(', ')}/s`);
    }
    return { jobs: opts.jobs, keys: opts.keys, masters: cluster.nodes.length, spread: true, rows };
  } finally {
    await cluster.stop();
  }
}

/** The section's markdown table. */
export function formatCluster(c: ClusterResult): string {
  const lines = [
    `### Redis Cluster: ${c.jobs.toLocaleString('en-US')} jobs over ${c.keys} rate-limit keys, ${c.masters} local masters, partitions on different masters, concurrency 64`,
    '',
    '| QUEUE_PARTITIONS | worker processes | deliveries/s (runs) | worker CPU us/delivery | Redis CPU us/delivery, per master | Redis commands/delivery, per master | busiest master (commands) |',
    '| ---: | ---: | ---: | ---: | --- | --- | ---: |',
  ];
  for (const r of c.rows) {
    const total = r.redisCommandsPerMaster.reduce((a, b) => a + b, 0);
    const busiest = total > 0 ? Math.max(...r.redisCommandsPerMaster) / total : NaN;
    lines.push(
      `| ${r.partitions} | ${r.workers} | ${Math.round(r.deliveriesPerSecond)} (${r.runsPerSecond.map(Math.round).join(', ')}) | ${r.workerCpuUsPerDelivery.toFixed(0)} | ${r.redisCpuPerMaster.map((v) => v.toFixed(0)).join(' / ')} | ${r.redisCommandsPerMaster.map((v) => v.toFixed(1)).join(' / ')} | ${(busiest * 100).toFixed(0)}% |`,
    );
  }
  return lines.join('\n');
}
