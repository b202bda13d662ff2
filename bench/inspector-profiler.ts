// Records a CPU profile of another Node process over exactly the span the bench measures, through
// the inspector protocol (the process runs with --inspect on a loopback port). --cpu-prof would
// also record start-up and warm-up, which would blur the comparison per delivery.
import { WebSocket } from 'undici';
import type { CpuProfile } from './profile-summary.js';

export interface InspectorProfiler {
  start(): Promise<void>;
  /** Ends the recording and returns it (the .cpuprofile format). */
  stop(): Promise<CpuProfile>;
  close(): void;
}

/** Connects to `ws://...` printed by `node --inspect`, samples every `intervalUs` microseconds. */
export async function connectProfiler(url: string, intervalUs = 500): Promise<InspectorProfiler> {
  const ws = new WebSocket(url);
  await new Promise<void>((resolve, reject) => {
    ws.addEventListener('open', () => resolve(), { once: true });
    ws.addEventListener('error', () => reject(new Error(`cannot connect to the inspector at ${url}`)), { once: true });
  });
  let nextId = 0;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  ws.addEventListener('message', (ev) => {
    const msg = JSON.parse(String(ev.data)) as { id?: number; result?: unknown; error?: { message: string } };
    const waiter = msg.id === undefined ? undefined : pending.get(msg.id);
    if (!waiter || msg.id === undefined) return;
    pending.delete(msg.id);
    if (msg.error) waiter.reject(new Error(msg.error.message));
    else waiter.resolve(msg.result);
  });
  const call = (method: string, params: Record<string, unknown> = {}) =>
    new Promise<unknown>((resolve, reject) => {
      const id = ++nextId;
      pending.set(id, { resolve, reject });
      ws.send(JSON.stringify({ id, method, params }));
    });
  await call('Profiler.enable');
  await call('Profiler.setSamplingInterval', { interval: intervalUs });
  return {
    start: async () => void (await call('Profiler.start')),
    stop: async () => ((await call('Profiler.stop')) as { profile: CpuProfile }).profile,
    close: () => ws.close(),
  };
}
