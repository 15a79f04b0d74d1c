/**
 * The last step of a change that closes ports or changes streams in place: wait until the
 * kernel agrees with the answer about to be given. A removed port refuses connections only once
 * no process holds its listening socket (until then the kernel completes handshakes and queues
 * them, to be reset when the last holder lets go); a changed stream stops reaching its old backend
 * only once no worker of an earlier generation holds the socket it shares with the new workers.
 * Old workers are told to quit (they close their listeners at once); one that has not let go by
 * the deadline is killed, since a worker that ignores SIGQUIT that long is stopped or stuck.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../../log.js';
import { signal } from '../../sys/processes.js';
import { type KernelSocket, kernelSockets, socketHolders } from '../../sys/sockets.js';
import { acceptingWorkers } from '../process/controller.js';

export interface SettleOptions {
  /** Sockets of ports that close with this change: they must be gone from the kernel. */
  closing: KernelSocket[];
  /** Sockets of streams changed in place: no process of `old` may hold them. */
  changed: KernelSocket[];
  /** The processes of earlier generations, read again each round (they change during a handoff). */
  old(): Promise<number[]>;
  timeoutMs: number;
  log: Logger;
}

/**
 * Waits until the kernel shows every closing socket gone and no old process holding a changed
 * one; returns the ports for which that could not be made true (normally none).
 */
export async function settleSockets(options: SettleOptions): Promise<number[]> {
  if (options.closing.length === 0 && options.changed.length === 0) return [];
  const changedInodes = new Set(options.changed.map((socket) => socket.inode));
  // Only the tables that can hold them: each round reads them whole, sessions included.
  const protocols = new Set([...options.closing, ...options.changed].map((socket) => socket.protocol));
  let deadline = Date.now() + options.timeoutMs;
  let killed = false;
  const started = Date.now();
  for (let round = 0; ; round += 1) {
    const alive = new Set(kernelSockets(protocols).map((socket) => socket.inode));
    const lingering = options.closing.filter((socket) => alive.has(socket.inode));
    const old = await options.old();
    const stillOld = socketHolders(old, new Set([...changedInodes].filter((inode) => alive.has(inode))));
    // Workers whose descriptors may not be read (no CAP_SYS_PTRACE over them): the next best
    // proof is that they have retitled themselves as shutting down.
    const unknown = stillOld.unreadable.length > 0 ? await acceptingWorkers(stillOld.unreadable) : [];
    if (lingering.length === 0 && stillOld.size === 0 && unknown.length === 0) {
      options.log.debug('sockets settled', { ms: Date.now() - started, rounds: round });
      return [];
    }
    if (Date.now() > deadline) {
      const watched = new Set([...lingering.map((socket) => socket.inode), ...changedInodes]);
      const holders = socketHolders(old, watched);
      if (killed || holders.size === 0) {
        const held = new Set([...holders.values()].flat());
        const ports = [...lingering, ...options.changed.filter((socket) => held.has(socket.inode))].map(
          (socket) => socket.port,
        );
        return [...new Set(ports)].sort((a, b) => a - b);
      }
      for (const pid of holders.keys()) {
        options.log.warn('an old nginx worker still holds a changed or removed port; killing it', {
          pid,
          timeoutMs: options.timeoutMs,
        });
        signal(pid, 'SIGKILL');
      }
      killed = true;
      deadline = Date.now() + 1000;
    }
    await sleep(round < 20 ? 1 : 5);
  }
}
