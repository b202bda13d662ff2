import { Redis } from 'ioredis';
import type { RedisClient } from './redis-connection.js';

/** Sockets whose writes are held until the current event-loop turn ends. */
const corked = new WeakSet<object>();

/**
 * Holds the writes of `connection` until the end of this event-loop turn, then sends them in one
 * system call, in the order they were issued: commands of many jobs that finish in the same turn
 * (their answers came in one socket read) leave together instead of one write each. Only the
 * sending is joined: every command is still its own, answered and awaited on its own, so nothing
 * about when a command is known to have run changes. A connection that is not ready (commands
 * queued by ioredis itself) or a Cluster client is left alone.
 */
export function batchWrites(connection: RedisClient): void {
  if (!(connection instanceof Redis) || connection.status !== 'ready') return;
  const socket = connection.stream;
  if (corked.has(socket)) return;
  corked.add(socket);
  socket.cork();
  setImmediate(() => {
    corked.delete(socket);
    socket.uncork();
  });
}
