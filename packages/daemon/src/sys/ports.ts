/**
 * What the kernel says about ports: whether this host could bind one right now, and which TCP
 * sockets are listening. nginx -t cannot see a port held by another process, so the daemon asks
 * the kernel itself before it hands a port to nginx.
 */
import { createSocket } from 'node:dgram';
import { readFile } from 'node:fs/promises';
import { createServer, isIPv6 } from 'node:net';

/** unavailable: the address is not one of this host's (EADDRNOTAVAIL), or an IPv4-mapped IPv6 address. */
export type PortProbe = 'free' | 'in-use' | 'denied' | 'unavailable';

/** What a probe that did not find the port free says, for a stream set aside because of it. */
export function probeReason(probe: Exclude<PortProbe, 'free'>): string {
  if (probe === 'in-use') return 'the port is held by another process';
  if (probe === 'denied') return 'permission denied on the port';
  return 'the listen address is not an address of this host';
}

/**
 * An IPv4 address written as IPv6 (::ffff:a.b.c.d): nginx listens on IPv6 sockets with
 * IPV6_V6ONLY, where such an address can never be bound; the IPv4 form is what is meant.
 */
export function isIPv4Mapped(address: string): boolean {
  return /^(?:(?:0{1,4}:){5}|::(?:0{1,4}:)?)ffff:/i.test(address) && isIPv6(address);
}

/**
 * Tries to bind `host:port` (TCP) and closes the socket at once. `host` undefined means the IPv4
 * wildcard, which is what `listen <port>;` binds in nginx.
 */
export function probeTcpPort(port: number, host: string | undefined): Promise<PortProbe> {
  return new Promise((resolvePromise, reject) => {
    const server = createServer();
    server.once('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'EADDRINUSE') resolvePromise('in-use');
      else if (error.code === 'EACCES' || error.code === 'EPERM') resolvePromise('denied');
      else if (error.code === 'EADDRNOTAVAIL') resolvePromise('unavailable');
      else reject(error);
    });
    server.listen({ port, host: host ?? '0.0.0.0', exclusive: true, backlog: 1 }, () => {
      server.close(() => resolvePromise('free'));
    });
  });
}

/** Tries to bind `host:port` (UDP) and closes the socket at once. */
export function probeUdpPort(port: number, host: string | undefined): Promise<PortProbe> {
  return new Promise((resolvePromise, reject) => {
    const socket = createSocket({ type: host !== undefined && isIPv6(host) ? 'udp6' : 'udp4', reuseAddr: false });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      socket.close();
      if (error.code === 'EADDRINUSE') resolvePromise('in-use');
      else if (error.code === 'EACCES' || error.code === 'EPERM') resolvePromise('denied');
      else if (error.code === 'EADDRNOTAVAIL') resolvePromise('unavailable');
      else reject(error);
    });
    socket.bind({ port, address: host ?? '0.0.0.0', exclusive: true }, () => {
      socket.close(() => resolvePromise('free'));
    });
  });
}

/** Whether `port` can be bound for every protocol in `protocols`; the first problem found wins. */
export async function probePort(
  port: number,
  protocols: Array<'tcp' | 'udp'>,
  host: string | undefined,
): Promise<PortProbe> {
  if (host !== undefined && isIPv4Mapped(host)) return 'unavailable';
  for (const protocol of protocols) {
    const probe = protocol === 'tcp' ? await probeTcpPort(port, host) : await probeUdpPort(port, host);
    if (probe !== 'free') return probe;
  }
  return 'free';
}

export interface ListeningSocket {
  /** Local address as text: an IPv4 dotted quad or an IPv6 address without brackets. */
  address: string;
  port: number;
  /** The socket's inode: what /proc/<pid>/fd links name as socket:[inode]. */
  inode: number;
}

function decodeIPv4(hex: string): string {
  // /proc/net/tcp prints the address as one host-order (little-endian here) 32-bit word.
  const value = Number.parseInt(hex, 16);
  return [value & 255, (value >>> 8) & 255, (value >>> 16) & 255, (value >>> 24) & 255].join('.');
}

function decodeIPv6(hex: string): string {
  const groups: string[] = [];
  for (let word = 0; word < 4; word += 1) {
    const chunk = hex.slice(word * 8, word * 8 + 8);
    const bytes = [chunk.slice(6, 8), chunk.slice(4, 6), chunk.slice(2, 4), chunk.slice(0, 2)].join('');
    groups.push(bytes.slice(0, 4), bytes.slice(4, 8));
  }
  return joinIPv6Groups(groups);
}

/** Eight IPv6 groups as text: leading zeros dropped, the longest run of zero groups written `::`. */
export function joinIPv6Groups(groups: string[]): string {
  const full = groups.map((group) => group.toLowerCase().replace(/^0+(?=.)/, '')).join(':');
  const match = [...full.matchAll(/(?:^|:)0(?::0)+(?::|$)/g)].sort((a, b) => b[0].length - a[0].length)[0];
  if (!match) return full;
  return `${full.slice(0, match.index)}::${full.slice((match.index ?? 0) + match[0].length)}`;
}

const TCP_LISTEN = '0A';
/** An unconnected UDP socket (what a UDP listener is) shows as state 07. */
const UDP_UNCONNECTED = '07';

/** Parses /proc/net/tcp or /proc/net/tcp6 text into its listening sockets. */
export function parseProcNetTcp(text: string, family: 4 | 6, state = TCP_LISTEN): ListeningSocket[] {
  const sockets: ListeningSocket[] = [];
  const lines = text.split('\n');
  for (let i = 1; i < lines.length; i += 1) {
    const fields = lines[i]?.trim().split(/\s+/);
    if (!fields || fields.length < 4 || fields[3] !== state) continue;
    const [addressHex, portHex] = (fields[1] ?? '').split(':');
    if (addressHex === undefined || portHex === undefined) continue;
    sockets.push({
      address: family === 4 ? decodeIPv4(addressHex) : decodeIPv6(addressHex),
      port: Number.parseInt(portHex, 16),
      inode: Number(fields[9]),
    });
  }
  return sockets;
}

export interface ListeningPorts {
  tcp: Set<number>;
  udp: Set<number>;
}

async function socketsIn(file: string, family: 4 | 6, state: string): Promise<ListeningSocket[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return []; // no IPv6 in this kernel
    throw error;
  }
  return parseProcNetTcp(text, family, state);
}

/** The ports with a TCP listening socket or a bound, unconnected UDP socket, any address. */
export async function listeningPorts(): Promise<ListeningPorts> {
  const [tcp4, tcp6, udp4, udp6] = await Promise.all([
    socketsIn('/proc/net/tcp', 4, TCP_LISTEN),
    socketsIn('/proc/net/tcp6', 6, TCP_LISTEN),
    socketsIn('/proc/net/udp', 4, UDP_UNCONNECTED),
    socketsIn('/proc/net/udp6', 6, UDP_UNCONNECTED),
  ]);
  return {
    tcp: new Set([...tcp4, ...tcp6].map((socket) => socket.port)),
    udp: new Set([...udp4, ...udp6].map((socket) => socket.port)),
  };
}

/** The TCP ports that have a listening socket on this host (network namespace), any address. */
export async function listeningTcpPorts(): Promise<Set<number>> {
  return (await listeningPorts()).tcp;
}

/** The kernel's range of ports for outgoing connections, or undefined when unknown. */
export async function ephemeralPortRange(): Promise<{ start: number; end: number } | undefined> {
  try {
    const [start, end] = (await readFile('/proc/sys/net/ipv4/ip_local_port_range', 'utf8'))
      .trim()
      .split(/\s+/)
      .map(Number);
    if (start === undefined || end === undefined || Number.isNaN(start) || Number.isNaN(end)) return undefined;
    return { start, end };
  } catch {
    return undefined; // not Linux, or /proc hidden: the warning it feeds is skipped
  }
}
