// How delivery throughput and Redis load spread with QUEUE_PARTITIONS and worker processes on a
// local 3-master Redis Cluster (docs/scaling.md). Everything runs on this machine, so the masters,
// the workers and the sink share its cores: read the Redis CPU split, not absolute throughput.
//   node --import tsx bench/cluster-scaling.ts [--jobs 20000] [--keys 12] [--runs 3] [--spread] [--standalone]
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { Command } from 'commander';
import { hashTaggedPrefix, loadConfig } from '../src/config/config.js';
import { relayKeys } from '../src/redis/redis-connection.js';
import { createRelayContext } from '../src/context/relay-context.js';
import { createLogger } from '../src/logger.js';
import { Redis } from 'ioredis';
import { freePort, startPrivateRedis } from '../src/redis/embedded-redis.js';
import { startLocalCluster } from '../test/support/local-cluster.js';

/** Where the runs go: the local cluster, or one private redis-server for comparison. */
interface Target {
  /** host:port of each master. */
  nodes: string[];
  env: Record<string, string>;
  onNode<T>(fn: (r: Redis) => Promise<T>, node: string): Promise<T>;
  /** The master serving a key (cluster only). */
  masterOf?: (key: string) => Promise<string>;
  stop(): Promise<void>;
}

async function startTarget(kind: 'cluster' | 'standalone'): Promise<Target> {
  if (kind === 'cluster') {
    const c = await startLocalCluster(3);
    return {
      nodes: c.nodes,
      env: { REDIS_CLUSTER_NODES: c.nodes.join(',') },
      onNode: (fn, node) => c.onNode(fn, node),
      masterOf: async (key) => c.masterOf(await c.keySlot(key)),
      stop: c.stop,
    };
  }
  const r = await startPrivateRedis();
  const node = r.url.replace('redis://', '');
  return {
    nodes: [node],
    env: { REDIS_URL: r.url },
    async onNode(fn) {
      const client = new Redis(r.url);
      try {
        return await fn(client);
      } finally {
        client.disconnect();
      }
    },
    stop: r.stop,
  };
}

interface Run {
  partitions: number;
  workers: number;
  deliveriesPerSecond: number;
  workerCpuUsPerDelivery: number;
  /** Redis CPU microseconds per delivery, per master. */
  redisCpuPerMaster: number[];
  /** Redis commands per delivery (inside scripts included), per master: the work itself, free of CPU noise. */
  redisCommandsPerMaster: number[];
}

/** The hash-tagged BullMQ prefix of each partition. */
const partitionTags = (prefix: string, partitions: number) =>
  relayKeys(hashTaggedPrefix(prefix), partitions).partitions.map((p) => p.bullPrefix);

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Per master: CPU seconds used, and commands executed (those inside scripts included). */
async function redisStats(target: Target): Promise<{ cpu: number; commands: number }[]> {
  return Promise.all(
    target.nodes.map((node) =>
      target.onNode(async (r) => {
        const info = await r.info();
        const get = (k: string) => Number(new RegExp(`${k}:([\\d.]+)`).exec(info)?.[1] ?? 0);
        return { cpu: get('used_cpu_user') + get('used_cpu_sys'), commands: get('total_commands_processed') };
      }, node),
    ),
  );
}

async function startSink(): Promise<{ url: string; child: ChildProcess }> {
  const port = await freePort();
  const code = `require('node:http').createServer((q, s) => { q.resume(); q.on('end', () => s.writeHead(200, { 'content-type': 'application/json' }).end('{}')); }).listen(${port}, '127.0.0.1')`;
  const child = spawn(process.execPath, ['-e', code], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    const up = await fetch(`http://127.0.0.1:${port}/`).then(
      () => true,
      () => false,
    );
    if (up) return { url: `http://127.0.0.1:${port}`, child };
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('sink did not start');
}

async function measure(
  target: Target,
  sinkUrl: string,
  partitions: number,
  workers: number,
  jobs: number,
  keys: number,
  spread: boolean,
): Promise<Run> {
  let prefix = `scale-${randomUUID().slice(0, 8)}`;
  // --spread: a prefix whose partitions hash to slots of as many different masters as possible.
  while (
    spread &&
    target.masterOf &&
    new Set(await Promise.all(partitionTags(prefix, partitions).map(target.masterOf))).size < Math.min(partitions, target.nodes.length)
  ) {
    prefix = `scale-${randomUUID().slice(0, 8)}`;
  }
  const env = {
    ...target.env,
    ACTION_RELAY_PREFIX: prefix,
    QUEUE_PARTITIONS: String(partitions),
    METRICS_PORT: '0',
    LOG_LEVEL: 'warn',
    EGRESS_ALLOW_HOSTS: '127.0.0.1',
    WORKER_CONCURRENCY: '64',
  };
  const ctx = await createRelayContext(loadConfig(env), { logger: createLogger('warn'), processMetrics: false });
  // Distinct rate-limit keys (limits far above the rate reached): partitions route by them.
  for (let k = 0; k < keys; k++) {
    await ctx.store.put({
      id: `a${k}`,
      name: `a${k}`,
      endpoint: { url: sinkUrl, path: '/deliver', method: 'POST' },
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

  const children = Array.from({ length: workers }, () =>
    spawn(process.execPath, ['--import', 'tsx', 'workers/action-relay.ts', 'worker'], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'ignore', 'inherit'],
    }),
  );
  // From 5% to 95% delivered: leaves out worker start-up and the tail.
  const [from, to] = [Math.floor(jobs * 0.05), Math.ceil(jobs * 0.95)];
  let t0 = 0;
  let cpu0: number[] = [];
  let redis0: { cpu: number; commands: number }[] = [];
  for (;;) {
    const n = await done();
    if (!t0 && n >= from) {
      t0 = performance.now();
      cpu0 = children.map((c) => cpuSeconds(c.pid as number));
      redis0 = await redisStats(target);
    }
    if (t0 && n >= to) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  const seconds = (performance.now() - t0) / 1000;
  const workerCpu = children.map((c, i) => cpuSeconds(c.pid as number) - (cpu0[i] ?? 0)).reduce((a, b) => a + b, 0);
  const redis1 = await redisStats(target);
  const delivered = to - from;

  await Promise.all(children.map((c) => new Promise((r) => (c.once('exit', r), c.kill('SIGTERM')))));
  // Remove this run's keys, master by master (one key per command: keys of several slots).
  for (const node of target.nodes) {
    await target.onNode(async (r) => {
      let cursor = '0';
      do {
        const [next, found] = await r.scan(cursor, 'MATCH', `{${prefix}[:}]*`, 'COUNT', 1000);
        cursor = next;
        await Promise.all(found.map((k) => r.unlink(k)));
      } while (cursor !== '0');
    }, node);
  }
  await ctx.close();
  return {
    partitions,
    workers,
    deliveriesPerSecond: delivered / seconds,
    workerCpuUsPerDelivery: (workerCpu / delivered) * 1e6,
    redisCpuPerMaster: redis1.map((v, i) => ((v.cpu - (redis0[i]?.cpu ?? 0)) / delivered) * 1e6),
    redisCommandsPerMaster: redis1.map((v, i) => (v.commands - (redis0[i]?.commands ?? 0)) / delivered),
  };
}

async function main(): Promise<void> {
  const opts = new Command('cluster-scaling')
    .option('--jobs <n>', 'jobs per run', (v) => Number(v), 20_000)
    .option('--keys <n>', 'distinct rate-limit keys (third parties)', (v) => Number(v), 12)
    .option('--runs <n>', 'runs per configuration (the median is shown)', (v) => Number(v), 1)
    .option('--standalone', 'one private redis-server instead of the 3-master cluster')
    .option('--spread', 'pick key prefixes whose partitions land on different masters')
    .option('--configs <list>', 'partitions x worker processes', '1x1,3x1,1x2,3x2')
    .parse()
    .opts<{ jobs: number; keys: number; runs: number; standalone?: boolean; spread?: boolean; configs: string }>();
  const configs = opts.configs.split(',').map((c) => c.split('x').map(Number) as [number, number]);
  const target = await startTarget(opts.standalone ? 'standalone' : 'cluster');
  const sink = await startSink();
  const rows: Run[] = [];
  try {
    for (const [partitions, workers] of configs) {
      const runs: Run[] = [];
      for (let i = 0; i < opts.runs; i++)
        runs.push(await measure(target, sink.url, partitions, workers, opts.jobs, opts.keys, opts.spread === true));
      runs.sort((a, b) => a.deliveriesPerSecond - b.deliveriesPerSecond);
      const median = runs[Math.floor(runs.length / 2)] as Run;
      rows.push(median);
      process.stderr.write(
        `partitions ${partitions}, workers ${workers}: ${runs.map((r) => Math.round(r.deliveriesPerSecond)).join(', ')}/s\n`,
      );
    }
  } finally {
    sink.child.kill('SIGTERM');
    await target.stop();
  }
  const where = opts.standalone ? 'one redis-server' : `3 masters${opts.spread ? ', partitions on different masters' : ''}`;
  console.log(
    `${opts.jobs} jobs over ${opts.keys} rate-limit keys, ${where}, WORKER_CONCURRENCY=64, median of ${opts.runs}, one machine\n`,
  );
  console.log(
    '| QUEUE_PARTITIONS | worker processes | deliveries/s | worker CPU us/delivery | Redis CPU us/delivery, per master | Redis commands/delivery, per master | busiest master (commands) |',
  );
  console.log('| ---: | ---: | ---: | ---: | --- | --- | ---: |');
  for (const r of rows) {
    const total = r.redisCommandsPerMaster.reduce((a, b) => a + b, 0);
    const busiest = Math.max(...r.redisCommandsPerMaster) / total;
    console.log(
      `| ${r.partitions} | ${r.workers} | ${r.deliveriesPerSecond.toFixed(0)} | ${r.workerCpuUsPerDelivery.toFixed(0)} | ${r.redisCpuPerMaster.map((v) => v.toFixed(0)).join(' / ')} | ${r.redisCommandsPerMaster.map((v) => v.toFixed(1)).join(' / ')} | ${(busiest * 100).toFixed(0)}% |`,
    );
  }
}

await main();
