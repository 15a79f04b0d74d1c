/**
 * The kernel's word on the sockets that serve streams: which TCP sockets listen and which UDP
 * sockets are bound, each with its inode, and which processes hold a given socket open. A signal
 * sent to nginx proves nothing; a port refuses connections only once no process holds its
 * listening socket, and a changed stream stops reaching its old backend only once no old worker
 * holds it. This is what the daemon checks before it answers, and what its audit compares.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { isIPv6 } from 'node:net';
import { joinIPv6Groups, parseProcNetTcp } from './ports.js';

export type Protocol = 'tcp' | 'udp';

export interface KernelSocket {
  protocol: Protocol;
  /** IPv4 dotted quad, or an IPv6 address in its compressed form. */
  address: string;
  port: number;
  inode: number;
}

const SOURCES: Array<{ file: string; protocol: Protocol; family: 4 | 6; state: string }> = [
  { file: '/proc/net/tcp', protocol: 'tcp', family: 4, state: '0A' },
  { file: '/proc/net/tcp6', protocol: 'tcp', family: 6, state: '0A' },
  // An unconnected UDP socket (what a UDP listener is) shows as state 07.
  { file: '/proc/net/udp', protocol: 'udp', family: 4, state: '07' },
  { file: '/proc/net/udp6', protocol: 'udp', family: 6, state: '07' },
];

/**
 * Every listening TCP socket and bound, unconnected UDP socket in this network namespace (of
 * `protocols`, both by default). Read synchronously: it is polled for a few milliseconds while a
 * change settles.
 */
export function kernelSockets(protocols: ReadonlySet<Protocol> = new Set(['tcp', 'udp'])): KernelSocket[] {
  const sockets: KernelSocket[] = [];
  for (const source of SOURCES) {
    if (!protocols.has(source.protocol)) continue;
    let text: string;
    try {
      text = readFileSync(source.file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue; // no IPv6 in this kernel
      throw error;
    }
    for (const socket of parseProcNetTcp(text, source.family, source.state)) {
      sockets.push({ protocol: source.protocol, address: socket.address, port: socket.port, inode: socket.inode });
    }
  }
  return sockets;
}

/** An address as /proc/net shows it: IPv6 in inet_ntop's compressed lower-case form. */
export function canonicalAddress(address: string): string {
  if (!isIPv6(address)) return address;
  const [head = '', tail] = address.toLowerCase().split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups =
    tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  return joinIPv6Groups(groups);
}

/**
 * The socket inodes each of `pids` holds among `inodes`; a pid that holds none is left out. A pid
 * whose descriptors this process may not read (no CAP_SYS_PTRACE over it, as in a container's
 * default capabilities) is listed in `unreadable`: nothing can be said of it.
 */
export function socketHolders(
  pids: Iterable<number>,
  inodes: ReadonlySet<number>,
): Map<number, number[]> & { unreadable: number[] } {
  const holders = Object.assign(new Map<number, number[]>(), { unreadable: [] as number[] });
  if (inodes.size === 0) return holders;
  for (const pid of pids) {
    const all = socketInodesOf(pid);
    if (all === undefined) {
      holders.unreadable.push(pid);
      continue;
    }
    const held = all.filter((inode) => inodes.has(inode));
    if (held.length > 0) holders.set(pid, held);
  }
  return holders;
}

/** The inodes of every socket `pid` holds open; none when it is gone, undefined when its descriptors may not be read. */
export function socketInodesOf(pid: number): number[] | undefined {
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return code === 'EACCES' || code === 'EPERM' ? undefined : []; // not ours to read, or gone
  }
  const inodes: number[] = [];
  for (const fd of fds) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EPERM') return undefined;
      continue; // closed while we looked
    }
    if (target.startsWith('socket:[')) inodes.push(Number(target.slice(8, -1)));
  }
  return inodes;
}
