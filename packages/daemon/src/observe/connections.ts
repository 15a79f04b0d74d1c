/** Established TCP connections per local port, from the kernel's socket table. */
import { readFileSync } from 'node:fs';

const ESTABLISHED = '01';

function count(file: string, ports: Set<number>, into: Map<number, number>): void {
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
    if (ports.has(port)) into.set(port, (into.get(port) ?? 0) + 1);
  }
}

/**
 * How many established TCP connections have each of `ports` as their local port: the clients of
 * a stream's sessions (nginx's connections to backends use other local ports).
 */
export function activeConnections(ports: Iterable<number>): Map<number, number> {
  const wanted = new Set(ports);
  const counts = new Map<number, number>();
  if (wanted.size === 0) return counts;
  count('/proc/net/tcp', wanted, counts);
  count('/proc/net/tcp6', wanted, counts);
  return counts;
}
