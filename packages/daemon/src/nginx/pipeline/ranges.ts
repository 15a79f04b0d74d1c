/**
 * What a port range changes in the pipeline: a stream is keyed by its first port, but every one of
 * its ports is bound, probed, verified in the kernel and audited.
 */
import { portsOf, type StreamRecord } from '@stream-conductor/shared';
import type { PortProbe } from '../../sys/ports.js';
import type { Entry } from './types.js';

/** Each port of every entry, to the entry that listens on it (a single port maps to itself). */
export function coverOf(entries: ReadonlyMap<number, Entry>): Map<number, Entry> {
  const cover = new Map<number, Entry>();
  for (const entry of entries.values()) {
    if (entry.record.portEnd === undefined) cover.set(entry.record.port, entry);
    else for (const port of portsOf(entry.record)) cover.set(port, entry);
  }
  return cover;
}

/** The first entry other than the one keyed `key` that shares a port with `record`, and that port. */
export function overlapping(
  entries: ReadonlyMap<number, Entry>,
  key: number,
  record: StreamRecord,
): { entry: Entry; port: number } | undefined {
  const last = record.portEnd ?? record.port;
  for (const [other, entry] of entries) {
    if (other === key) continue;
    const otherLast = entry.record.portEnd ?? entry.record.port;
    if (entry.record.port <= last && record.port <= otherLast)
      return { entry, port: Math.max(entry.record.port, record.port) };
  }
  return undefined;
}

/** Probes every port of `record`; answers the first that is not free (and which), or free. */
export async function probeEach(
  record: StreamRecord,
  probe: (port: number) => Promise<PortProbe>,
): Promise<{ probe: PortProbe; port: number }> {
  for (const port of portsOf(record)) {
    const result = await probe(port);
    if (result !== 'free') return { probe: result, port };
  }
  return { probe: 'free', port: record.port };
}
