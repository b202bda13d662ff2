import { Redis } from 'ioredis';

/**
 * Follows Redis Sentinel failovers for the connections of one process.
 *
 * ioredis' own `failoverDetector` is not used: its detector outlives the connection it was made
 * for, and a `+switch-master` that arrives while that connection is already reconnecting (the
 * master was killed, so its socket closed first) aborts the reconnect for good. The client
 * then ends ("Connection is closed.") and every later command fails, with no retry: a worker
 * or api process alive but useless until restarted. Seen in about one failover test in four.
 *
 * Here one subscriber per sentinel serves every connection of the process, and a switch only
 * drops the connections that are `ready`: a connection still reconnecting asks the sentinels
 * for the master anyway, and now gets the new one. That also covers a master that hangs
 * instead of closing its sockets, which the socket alone never tells.
 */
interface Watch {
  subscribers: Redis[];
  clients: Set<Redis>;
  /** The last switch acted on: each sentinel announces it, once is enough. */
  lastSwitch?: string;
}

const watches = new Map<string, Watch>();

export interface SentinelAddress {
  host: string;
  port: number;
}

/**
 * Registers a sentinel-backed client: when the sentinels announce a new master for
 * `masterName`, the client reconnects (and so asks them for the new address). The subscribers
 * are opened with the first client and closed with the last one.
 */
export function followFailovers(client: Redis, sentinels: readonly SentinelAddress[], masterName: string): void {
  const id = `${masterName}@${sentinels.map((s) => `${s.host}:${s.port}`).join(',')}`;
  let watch = watches.get(id);
  if (!watch) {
    watch = openWatch(sentinels, masterName);
    watches.set(id, watch);
  }
  const current = watch;
  current.clients.add(client);
  client.once('end', () => {
    current.clients.delete(client);
    if (current.clients.size > 0 || watches.get(id) !== current) return;
    watches.delete(id);
    for (const s of current.subscribers) s.disconnect();
  });
}

function openWatch(sentinels: readonly SentinelAddress[], masterName: string): Watch {
  const watch: Watch = { subscribers: [], clients: new Set() };
  for (const address of sentinels) {
    const subscriber = new Redis({
      ...address,
      lazyConnect: true,
      enableReadyCheck: false,
      maxRetriesPerRequest: null,
      retryStrategy: (times) => Math.min(200 * times, 2000),
      connectionName: 'action-relay-failover-watch',
    });
    // A sentinel that is down is retried quietly: the others still speak.
    subscriber.on('error', () => undefined);
    subscriber.on('message', (_channel: string, message: string) => {
      // "<master name> <old ip> <old port> <new ip> <new port>", once from each sentinel.
      const [name, , , host, port] = message.split(' ');
      if (name !== masterName || message === watch.lastSwitch) return;
      watch.lastSwitch = message;
      for (const client of watch.clients)
        if (client.status === 'ready' && !connectedTo(client, host, Number(port))) client.disconnect(true);
    });
    subscriber.subscribe('+switch-master').catch(() => undefined);
    watch.subscribers.push(subscriber);
  }
  return watch;
}

/** Already on the new master (it reconnected after the old one died): nothing to do. */
function connectedTo(client: Redis, host: string | undefined, port: number): boolean {
  const stream = client.stream as { remoteAddress?: string; remotePort?: number } | undefined;
  return stream?.remotePort === port && stream.remoteAddress === host;
}
