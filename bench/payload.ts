// The jobs every variant delivers: params and context as the journey engine sends them, and the
// action whose body template turns the params into the same JSON bytes the baselines POST.

export type JobParams = Record<string, unknown>;
export type JobContext = Record<string, string>;

/**
 * Milliseconds (3 decimals) on the machine's monotonic clock, which every process on the machine
 * shares and a step of the time of day does not move: the enqueue time of the bench's jobs (`t`,
 * read back by the sink) and the sink's arrivals. (`performance.timeOrigin` is each process's own
 * reading of the time of day at its start: in one run the sink's differed from the bench's by
 * about 3 ms, and its latencies read a p50 of -1.9 ms.) Offset by 1e12 to print as wide as epoch
 * ms, which buildParams allows for.
 */
export const benchClock = (): number => Math.round((1e12 + Number(process.hrtime.bigint()) / 1e6) * 1000) / 1000;

const FIXED_KEYS = ['t', 'profileId', 'firstName', 'lastName', 'email', 'phone', 'region', 'orderId', 'amount', 'items'] as const;

/**
 * Params whose JSON (`JSON.stringify(params)`, and so the action's rendered body) is `bytes` long,
 * padded by the `note` field. `t` comes first: the sink reads it from the head of the body.
 */
export function buildParams(i: number, bytes: number, t = 0): JobParams {
  const params: JobParams = {
    t,
    profileId: `p-${String(i).padStart(9, '0')}`,
    firstName: 'Camille',
    lastName: 'Durand',
    email: `camille.durand+${i}@example.com`,
    phone: '+33612345678',
    region: 'eu-west',
    orderId: `ord-${String(i).padStart(9, '0')}`,
    amount: 129.95,
    items: [
      { sku: 'SKU-A1', qty: 2 },
      { sku: 'SKU-B7', qty: 1 },
    ],
    note: '',
  };
  // `t` is written with up to 17 characters at run time (benchClock: 13 digits and 3 decimals).
  const size = JSON.stringify({ ...params, t: 1_700_000_000_000.123 }).length;
  params.note = 'x'.repeat(Math.max(0, bytes - size));
  return params;
}

export function buildContext(i: number): JobContext {
  return { journeyId: 'j-bench', journeyVersionId: 'v1', nodeId: 'n-1', profileId: `p-${String(i).padStart(9, '0')}` };
}

/**
 * The definition action-relay delivers: each param rendered into the body under its own name.
 * `capture` takes the sink's `id` from each answer, as the Pool loop returns it.
 */
export function benchAction(
  id: string,
  sinkUrl: string,
  rateLimit?: { max: number; perMs: number },
  capture = false,
): Record<string, unknown> {
  const body: Record<string, string> = {};
  for (const k of [...FIXED_KEYS, 'note']) body[k] = `{{params.${k}}}`;
  return {
    id,
    name: `bench ${id}`,
    endpoint: { url: sinkUrl, path: '/deliver', method: 'POST', headers: { 'X-Journey': '{{context.journeyId}}' }, timeoutMs: 10_000 },
    parameters: {
      t: { type: 'decimal', required: true },
      profileId: { type: 'string', required: true },
      firstName: { type: 'string' },
      lastName: { type: 'string' },
      email: { type: 'string', required: true },
      phone: { type: 'string', required: true },
      region: { type: 'string' },
      orderId: { type: 'string', required: true },
      amount: { type: 'decimal' },
      items: { type: 'listObject', fields: { sku: { type: 'string', required: true }, qty: { type: 'integer' } } },
      note: { type: 'string' },
    },
    body,
    retry: { maxAttempts: 4, backoff: { type: 'exponential', delayMs: 1000, maxDelayMs: 300_000 } },
    ...(rateLimit ? { rateLimit } : {}),
    ...(capture ? { response: { fields: { id: { type: 'string' } } } } : {}),
  };
}
