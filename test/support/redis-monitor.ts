import { once } from 'node:events';
import { connect } from 'node:net';

/**
 * MONITOR on a socket of its own: each command Redis runs, as its arguments, goes to `onCommand`.
 * Not ioredis's `monitor()`: ioredis enters monitoring mode a microtask after MONITOR's OK, so a
 * line that arrives in the same packet as the OK is taken for the reply to a command never sent
 * ("Command queue state error", the monitor() promise rejected and the line lost; bullmq issue
 * #2505). On a Redis busy with other tests' commands that happened about once in a few runs.
 * Resolves once Redis has answered MONITOR: every command after that is seen.
 */
export async function monitorCommands(url: string, onCommand: (args: string[]) => void): Promise<{ stop(): void }> {
  const u = new URL(url);
  const socket = connect(Number(u.port || 6379), u.hostname);
  await once(socket, 'connect');
  const auth = u.password ? [['AUTH', ...(u.username ? [decodeURIComponent(u.username)] : []), decodeURIComponent(u.password)]] : [];
  const commands = [...auth, ['MONITOR']];
  socket.write(commands.map(resp).join(''));
  let oks = 0;
  let buffered = '';
  const monitoring = new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('latin1');
      let end: number;
      while ((end = buffered.indexOf('\r\n')) >= 0) {
        const line = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        if (line.startsWith('-')) return reject(new Error(`MONITOR: ${line.slice(1)}`));
        if (oks < commands.length) {
          // The answers to AUTH and MONITOR come first, in order.
          if (++oks === commands.length) resolve();
          continue;
        }
        onCommand(monitorArgs(line));
      }
    });
  });
  await monitoring;
  return { stop: () => void socket.destroy() };
}

const resp = (args: string[]) => `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;

const ESCAPES: Record<string, string> = { n: '\n', r: '\r', t: '\t', a: '\x07', b: '\b' };

/**
 * The arguments of one MONITOR line (`+<time> [<db> <client>] "cmd" "arg" ...`), each written by
 * Redis as a quoted string with `\"`, `\\`, `\n`... and `\xHH` escapes.
 */
export function monitorArgs(line: string): string[] {
  const args: string[] = [];
  let i = line.indexOf('"');
  while (i >= 0) {
    let arg = '';
    for (i++; i < line.length && line[i] !== '"'; i++) {
      const c = line[i] as string;
      if (c !== '\\') {
        arg += c;
        continue;
      }
      const e = line[++i] as string;
      if (e === 'x') {
        arg += String.fromCharCode(parseInt(line.slice(i + 1, i + 3), 16));
        i += 2;
      } else arg += ESCAPES[e] ?? e;
    }
    args.push(arg);
    i = line.indexOf('"', i + 1);
  }
  return args;
}
