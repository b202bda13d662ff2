import { fileURLToPath } from 'node:url';
import { randomInt } from 'node:crypto';
import type { Config } from '../config/config.js';
import { createRelayContext } from '../context/relay-context.js';
import { loadActionFiles } from '../actions/action-files.js';
import { ensureRedis } from '../redis/embedded-redis.js';
import { runApi } from '../cli/run-api.js';
import { runWorker } from '../cli/run-worker.js';
import { startMockReceiver } from './mock-receiver.js';
import type { JobInput } from '../queue/job-schema.js';

export interface DemoOptions {
  /** Sample jobs enqueued per second. @defaultValue 20 */
  rate: number;
  /** Stop after this many seconds; 0 runs until Ctrl-C. @defaultValue 0 */
  durationSeconds: number;
  /** Port of the mock third party; the sample actions point at 4010. @defaultValue 4010 */
  receiverPort: number;
  print: (line: string) => void;
}

const EXAMPLES_DIR = fileURLToPath(new URL('../../../examples/', import.meta.url));
const EXAMPLES_DIR_SRC = fileURLToPath(new URL('../../examples/', import.meta.url));

function sampleJob(n: number): JobInput {
  const context = { journeyId: 'welcome-journey', journeyVersionId: 'v3', nodeId: `n${n % 5}`, profileId: `p${randomInt(1, 100000)}` };
  switch (n % 3) {
    case 0:
      return {
        actionId: 'acme_sms',
        params: {
          region: 'eu west',
          phone: '+33600000000',
          firstName: 'Ada',
          orderId: `o-${n}`,
          amount: 12.5,
          items: [{ sku: 'A1', qty: 2 }],
        },
        context,
      };
    case 1:
      return {
        actionId: 'crm_upsert',
        params: { contactId: `c/${n}`, email: `user${n}@example.test`, tags: ['vip'], score: n % 100 },
        context,
      };
    default:
      return { actionId: 'audit_ping', params: { at: new Date().toISOString() }, context };
  }
}

/** api + worker + mock third party + sample actions + a trickle of jobs, in one process. */
export async function runDemo(config: Config, opts: DemoOptions): Promise<void> {
  const { print } = opts;
  const redis = await ensureRedis(config.REDIS_URL);
  if (redis.process) print(`No Redis answered at ${config.REDIS_URL}: started a private redis-server at ${redis.url}`);
  // The mock third party listens on loopback, which the egress guard refuses unless allowed.
  const allowHosts = [...new Set([...(config.EGRESS_ALLOW_HOSTS ?? []), '127.0.0.1', 'localhost'])];
  const cfg: Config = { ...config, REDIS_URL: redis.url, EGRESS_ALLOW_HOSTS: allowHosts };
  // Demo credentials for the sample actions; real deployments set their own.
  process.env.ACTION_SECRET_ACME_SMS_TOKEN ??= 'demo-acme-token';
  process.env.ACTION_SECRET_CRM_API_KEY ??= 'demo-crm-key';
  process.env.ACTION_SECRET_AUDIT_KEY ??= 'demo-audit-key';

  const receiver = await startMockReceiver({ port: opts.receiverPort });
  const ctx = await createRelayContext(cfg, { watchActions: true });
  let dir = EXAMPLES_DIR;
  const files = await loadActionFiles(dir).catch(async () => {
    dir = EXAMPLES_DIR_SRC;
    return loadActionFiles(dir);
  });
  for (const f of files) {
    const def = JSON.parse(JSON.stringify(f.definition).replaceAll('http://127.0.0.1:4010', receiver.url)) as unknown;
    const saved = await ctx.store.put(def);
    print(`action ${saved.id} v${saved.version} applied from ${f.path}`);
  }
  const api = await runApi(cfg, ctx);
  const worker = await runWorker(cfg, ctx);

  print('');
  print(`API            ${api.url}/v1/actions   (PUT/GET actions, POST /v1/jobs, GET /v1/jobs/:id)`);
  print(`Metrics        ${api.url}/metrics  and worker http://${cfg.HOST}:${cfg.METRICS_PORT}/metrics`);
  const signIn = cfg.ADMIN_TOKEN ? '   (sign in with ADMIN_TOKEN)' : '';
  print(`Console        ${api.url}/console${signIn}   actions, live counts, edit, test, dead letters and replay`);
  print(`Queue UI       ${api.url}/admin/queues   API docs ${api.url}/docs`);
  print(`Mock receiver  ${receiver.url}  (answers 503 to 5% of requests, to show retries;`);
  print(`               422 to 5% of CRM upserts, which are not retried: their dead letters can be replayed in the console)`);
  for (const p of ctx.keys.partitions) print(`Results stream XREAD STREAMS ${p.results} $   on ${redis.url}`);
  print(
    `Try:           curl -s ${api.url}/v1/actions/acme_sms/preview -H 'content-type: application/json' -d '{"params":{"region":"eu","phone":"+331","orderId":"o1"}}'`,
  );
  print('');

  let n = 0;
  const enqueueTimer = setInterval(() => {
    const batch = Array.from({ length: Math.max(1, Math.round(opts.rate / 10)) }, () => sampleJob(n++));
    void ctx.producer.enqueueMany(batch).catch((err: unknown) => print(`enqueue failed: ${(err as Error).message}`));
  }, 100);

  // Read the results streams as the journey engine would: one reader per partition's stream.
  let delivered = 0;
  let dead = 0;
  let running = true;
  const readers = ctx.keys.partitions.map(() => ctx.redis.duplicate());
  const readLoop = Promise.all(
    ctx.keys.partitions.map(async (p, i) => {
      let lastId = '$';
      while (running) {
        const res = (await readers[i]?.xread('COUNT', 1000, 'BLOCK', 500, 'STREAMS', p.results, lastId).catch(() => null)) as
          [string, [string, string[]][]][] | null;
        for (const [, entries] of res ?? []) {
          for (const [id, fields] of entries) {
            lastId = id;
            const outcome = fields[fields.indexOf('outcome') + 1];
            if (outcome === 'delivered') delivered++;
            else dead++;
          }
        }
      }
    }),
  );

  let prevDelivered = 0;
  const started = Date.now();
  const printTimer = setInterval(() => {
    const secs = Math.round((Date.now() - started) / 1000);
    print(
      `[${String(secs).padStart(4)}s] delivered ${delivered - prevDelivered}/s (total ${delivered}), dead ${dead}, enqueued ${n}, receiver saw ${receiver.counts.requests} requests (${receiver.counts.failed} answered 503, ${receiver.counts.rejected} 422)`,
    );
    prevDelivered = delivered;
  }, 1000);

  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    if (opts.durationSeconds > 0) setTimeout(stop, opts.durationSeconds * 1000);
  });
  clearInterval(enqueueTimer);
  clearInterval(printTimer);
  running = false;
  await readLoop;
  for (const reader of readers) reader.disconnect();
  print('stopping...');
  await api.stop();
  await worker.stop();
  await ctx.close();
  await receiver.close();
  await redis.stop();
}
