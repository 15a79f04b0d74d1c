/**
 * The sessions nginx holds on a port or a range of ports, and cutting them. nginx keeps the
 * sessions of a removed stream alive on its old workers until they end; `ss -K` (iproute2, with
 * the kernel's SOCK_DESTROY) closes them. Only TCP sockets on the stream's local ports that an nginx process holds
 * count: another program's connections that use the same local port (a backend on this host
 * listening on that port on another address, an outgoing connection from that ephemeral port)
 * are never counted or cut. Every state of a connection but TIME-WAIT counts: a half-closed
 * session (CLOSE-WAIT while the backend still replies) is still a session. A stream that listens on
 * one address (its own, or the daemon's default) counts only the sessions on that address: another
 * nginx on this machine may serve the same port on another address (a second daemon, say).
 */
import { isIPv4, isIPv6 } from 'node:net';
import { lastPort, type PortSpan } from '@stream-conductor/shared';

/** The local ports of a stream, and the address it listens on (undefined: every address). */
export type SessionSpan = PortSpan & { listenAddress?: string | undefined };

import { execa } from 'execa';

interface Session {
  local: string;
  peer: string;
}

// STATE Recv-Q Send-Q Local Peer users:(("nginx",pid=1,fd=5),...)
const LINE = /^\S+\s+[0-9]+\s+[0-9]+\s+(\S+)\s+(\S+)\s+(.*)$/;

function checkedPort(port: number): number {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`invalid port ${String(port)}`);
  return port;
}

/** ss's filter for the local ports of `span`: one port, or first to last. */
function portFilter(span: PortSpan): string {
  const first = checkedPort(span.port);
  const last = checkedPort(lastPort(span));
  if (last < first) throw new Error(`invalid ports ${first}-${last}`);
  return first === last ? `( sport = :${first} )` : `( sport >= :${first} and sport <= :${last} )`;
}

const STATES = ['state', 'connected', 'exclude', 'time-wait'];

/**
 * An address in one spelling: IPv6 compressed in lower case (WHATWG's form), an IPv4-mapped IPv6
 * address as its IPv4 address, brackets dropped; undefined when it is no IP address.
 */
export function canonicalAddress(address: string): string | undefined {
  const bare = address.replace(/^\[(.*)\]$/, '$1');
  if (isIPv4(bare)) return bare;
  if (!isIPv6(bare)) return undefined;
  const v6 = new URL(`http://[${bare}]/`).hostname.slice(1, -1);
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(v6);
  if (!mapped) return v6;
  const high = Number.parseInt(mapped[1] ?? '0', 16);
  const low = Number.parseInt(mapped[2] ?? '0', 16);
  return [high >> 8, high & 255, low >> 8, low & 255].join('.');
}

/** Whether a socket's local `address:port` (`[v6]:port` for IPv6) is on `listenAddress` (a wildcard: any). */
export function onAddress(local: string, listenAddress: string | undefined): boolean {
  if (listenAddress === undefined || listenAddress === '' || listenAddress === '*') return true;
  const listen = canonicalAddress(listenAddress);
  if (listen === undefined || listen === '0.0.0.0' || listen === '::') return true;
  const at = local.lastIndexOf(':');
  return at > 0 && canonicalAddress(local.slice(0, at)) === listen;
}

/** The TCP connections on the local ports (and address) of `span` that an nginx process holds. */
async function nginxSessions(span: SessionSpan): Promise<Session[]> {
  const result = await execa('ss', ['-H', '-t', '-n', '-p', ...STATES, portFilter(span)], {
    reject: false,
  });
  if (result.exitCode !== 0) throw new Error(`ss failed: ${result.stderr || result.shortMessage}`);
  const sessions: Session[] = [];
  for (const line of result.stdout.split('\n')) {
    const match = LINE.exec(line.trim());
    const local = match?.[1] ?? '';
    if (match && (match[3] ?? '').includes('(("nginx",') && onAddress(local, span.listenAddress))
      sessions.push({ local, peer: match[2] ?? '' });
  }
  return sessions;
}

/** How many sessions nginx holds on the local ports of `span`. */
export async function nginxSessionCount(span: SessionSpan): Promise<number> {
  return (await nginxSessions(span)).length;
}

/** Closes every session nginx holds on the local ports of `span`; returns how many there were. */
export async function killSessions(span: SessionSpan): Promise<number> {
  const sessions = await nginxSessions(span);
  // Each one by its exact pair of addresses, so that no other program's connection is touched.
  for (let i = 0; i < sessions.length; i += 32) {
    const pairs = sessions.slice(i, i + 32).map(({ local, peer }) => `( src ${local} and dst ${peer} )`);
    const result = await execa('ss', ['-K', '-H', '-t', '-n', ...STATES, `( ${pairs.join(' or ')} )`], {
      reject: false,
    });
    if (result.exitCode !== 0) throw new Error(`ss -K failed: ${result.stderr || result.shortMessage}`);
  }
  const left = sessions.length === 0 ? 0 : await nginxSessionCount(span);
  if (left > 0) throw new Error(`${left} session(s) survived (does the kernel allow SOCK_DESTROY?)`);
  return sessions.length;
}
