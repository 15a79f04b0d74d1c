/**
 * Open client connections per stream port, with the bytes they have moved so far: from the
 * kernel's TCP info (`ss -tin`, iproute2), or, where ss is not available, a count of established
 * sockets from /proc/net/tcp (without bytes).
 */
import { readFileSync } from 'node:fs';
import { execa } from 'execa';

export interface OpenTraffic {
  active: number;
  /** Bytes received from the clients of the open connections. */
  bytesIn: number;
  /** Bytes sent to them (and acknowledged). */
  bytesOut: number;
}

const ESTABLISHED = '01';

function countFromProc(file: string, ports: Set<number>, into: Map<number, OpenTraffic>): void {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return; // no IPv6 in this kernel
  }
  const lines = text.split('\n');
  for (let i = 1; i < lines.length; i += 1) {
    const fields = lines[i]?.trim().split(/\s+/);
    if (!fields || fields[3] !== ESTABLISHED) continue;
    const port = Number.parseInt((fields[1] ?? '').split(':')[1] ?? '', 16);
    if (!ports.has(port)) continue;
    const open = into.get(port) ?? { active: 0, bytesIn: 0, bytesOut: 0 };
    open.active += 1;
    into.set(port, open);
  }
}

/** Parses `ss -tinH state established`: a socket line, then its indented TCP info line. */
export function parseSs(text: string, ports: Set<number>): Map<number, OpenTraffic> {
  const result = new Map<number, OpenTraffic>();
  let current: OpenTraffic | undefined;
  for (const line of text.split('\n')) {
    const socket = /^\s*[0-9]+\s+[0-9]+\s+(\S+):([0-9]+)\s+\S+/.exec(line);
    if (socket && !/^\s+[a-z]/.test(line)) {
      const port = Number(socket[2]);
      current = undefined;
      if (!ports.has(port)) continue;
      current = result.get(port) ?? { active: 0, bytesIn: 0, bytesOut: 0 };
      current.active += 1;
      result.set(port, current);
      continue;
    }
    if (!current) continue;
    current.bytesIn += Number(/\bbytes_received:([0-9]+)/.exec(line)?.[1] ?? 0);
    current.bytesOut += Number(/\bbytes_acked:([0-9]+)/.exec(line)?.[1] ?? 0);
  }
  return result;
}

/** The open connections of each of `ports` (as local port), with their bytes so far. */
export async function openConnections(ports: Iterable<number>): Promise<Map<number, OpenTraffic>> {
  const wanted = new Set(ports);
  if (wanted.size === 0) return new Map();
  // Only the sockets of these ports' span: the host may hold many others.
  const sorted = [...wanted].sort((a, b) => a - b);
  const span = `( sport >= :${sorted[0] ?? 1} and sport <= :${sorted[sorted.length - 1] ?? 65535} )`;
  const ss = await execa('ss', ['-tinH', 'state', 'established', span], { reject: false, timeout: 5000 });
  if (ss.exitCode === 0) return parseSs(ss.stdout, wanted);
  const counts = new Map<number, OpenTraffic>();
  countFromProc('/proc/net/tcp', wanted, counts);
  countFromProc('/proc/net/tcp6', wanted, counts);
  return counts;
}
