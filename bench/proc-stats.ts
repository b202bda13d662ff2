import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';
import { median } from './stats.js';

/** Kernel clock ticks per second, the unit of utime and stime in /proc/<pid>/stat. */
const TICKS_PER_SECOND = (() => {
  const out = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const n = Number(out.stdout?.trim());
  return Number.isFinite(n) && n > 0 ? n : 100;
})();

/** User + system CPU seconds of a /proc stat line. */
function statCpuSeconds(stat: string): number {
  // The command name may hold spaces and parentheses: the fields start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is the state (field 3 in proc(5)), so utime (14) and stime (15) are at 11 and 12.
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
}

/** User + system CPU seconds a process has used so far (its own threads, not its children). */
export function processCpuSeconds(pid: number): number {
  return statCpuSeconds(readFileSync(`/proc/${pid}/stat`, 'utf8'));
}

/**
 * User + system CPU seconds of a process's main thread alone: what runs JavaScript. The rest of
 * its CPU is V8's helper threads (parallel scavenges, concurrent marking, compilation) and libuv's.
 */
export function mainThreadCpuSeconds(pid: number): number {
  return statCpuSeconds(readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8'));
}

/** User + system CPU seconds of several processes together (processCpuSeconds, summed). */
export function processesCpuSeconds(pids: readonly number[]): number {
  return pids.reduce((sum, pid) => sum + processCpuSeconds(pid), 0);
}

/** Main-thread CPU seconds of several processes together (mainThreadCpuSeconds, summed). */
export function mainThreadsCpuSeconds(pids: readonly number[]): number {
  return pids.reduce((sum, pid) => sum + mainThreadCpuSeconds(pid), 0);
}

/** Peak resident set size of a process (VmHWM), in bytes. */
export function processPeakRss(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(status);
  return m ? Number(m[1]) * 1024 : 0;
}

async function info(redis: Redis, section: string): Promise<Map<string, string>> {
  const text = await redis.info(section);
  const out = new Map<string, string>();
  for (const line of text.split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0) out.set(line.slice(0, i), line.slice(i + 1));
  }
  return out;
}

/** CPU seconds (user + system) the Redis server has used since it started. */
export async function redisCpuSeconds(redis: Redis): Promise<number> {
  const cpu = await info(redis, 'cpu');
  return Number(cpu.get('used_cpu_user') ?? 0) + Number(cpu.get('used_cpu_sys') ?? 0);
}

/** Bytes the Redis server has allocated for data and overhead (INFO used_memory). */
export async function redisUsedMemory(redis: Redis): Promise<number> {
  const mem = await info(redis, 'memory');
  return Number(mem.get('used_memory') ?? 0);
}

/** Commands the server has run since it started, those run by scripts included (INFO total_commands_processed). */
export async function redisCommandsProcessed(redis: Redis): Promise<number> {
  return Number((await info(redis, 'stats')).get('total_commands_processed') ?? 0);
}

export interface CommandStat {
  calls: number;
  usec: number;
}

/**
 * Calls and microseconds per command since the server started (INFO commandstats). Commands run
 * by a Lua script are counted under their own names as well as under the EVAL / EVALSHA.
 */
export async function redisCommandStats(redis: Redis): Promise<Map<string, CommandStat>> {
  const text = await redis.info('commandstats');
  const out = new Map<string, CommandStat>();
  for (const m of text.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) {
    out.set(m[1] as string, { calls: Number(m[2]), usec: Number(m[3]) });
  }
  return out;
}

/** One Redis command's calls and server microseconds per delivery. */
export interface CommandCost {
  name: string;
  calls: number;
  usec: number;
}

/** Per-delivery difference of two INFO commandstats snapshots, the costliest commands first. */
export function commandsPerDelivery(before: Map<string, CommandStat>, after: Map<string, CommandStat>, n: number): CommandCost[] {
  const out: CommandCost[] = [];
  for (const [name, a] of after) {
    const b = before.get(name) ?? { calls: 0, usec: 0 };
    const calls = (a.calls - b.calls) / n;
    // Less than one call per 100 deliveries is the bench's own polling or a timer: left out.
    if (calls >= 0.01) out.push({ name, calls: Math.round(calls * 100) / 100, usec: Math.round(((a.usec - b.usec) / n) * 10) / 10 });
  }
  return out.sort((x, y) => y.usec - x.usec);
}

/** Per command, the median over runs of its calls and server time (a run without it counts 0), costliest first. */
export function medianCommands(runs: readonly CommandCost[][]): CommandCost[] {
  const names = new Set(runs.flatMap((run) => run.map((c) => c.name)));
  const of = (name: string, field: 'calls' | 'usec') => median(runs.map((run) => run.find((c) => c.name === name)?.[field] ?? 0)) ?? 0;
  return [...names].map((name) => ({ name, calls: of(name, 'calls'), usec: of(name, 'usec') })).sort((x, y) => y.usec - x.usec);
}

export async function redisVersion(redis: Redis): Promise<string> {
  return (await info(redis, 'server')).get('redis_version') ?? 'unknown';
}
