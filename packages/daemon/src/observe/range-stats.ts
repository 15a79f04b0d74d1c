/** A port range's traffic is the sum over its ports (nginx logs and the kernel count each port). */
import { portsOf, type StreamSpec, type TrafficStats } from '@stream-conductor/shared';
import type { OpenTraffic } from './connections.js';

/** Every port whose traffic belongs to one of `streams`. */
export function trafficPorts(streams: Array<Pick<StreamSpec, 'port' | 'portEnd'>>): number[] {
  return streams.flatMap((stream) => portsOf(stream));
}

/** The finished sessions of a stream: its port's, or the sum of its range's. */
export function sumFinished(
  stream: Pick<StreamSpec, 'port' | 'portEnd'>,
  of: (port: number) => TrafficStats,
): TrafficStats {
  if (stream.portEnd === undefined) return of(stream.port);
  const total: TrafficStats = {
    sessions: 0,
    failedSessions: 0,
    deniedSessions: 0,
    limitedSessions: 0,
    bytesIn: 0,
    bytesOut: 0,
  };
  for (const port of portsOf(stream)) {
    const one = of(port);
    total.sessions += one.sessions;
    total.failedSessions += one.failedSessions;
    total.deniedSessions += one.deniedSessions;
    total.limitedSessions += one.limitedSessions;
    total.bytesIn += one.bytesIn;
    total.bytesOut += one.bytesOut;
    if (one.lastSessionAt !== undefined && (total.lastSessionAt ?? '') < one.lastSessionAt)
      total.lastSessionAt = one.lastSessionAt;
  }
  return total;
}

/** The open connections of a stream: its port's, or the sum of its range's. */
export function sumOpen(
  stream: Pick<StreamSpec, 'port' | 'portEnd'>,
  open: ReadonlyMap<number, OpenTraffic>,
): OpenTraffic | undefined {
  if (stream.portEnd === undefined) return open.get(stream.port);
  let total: OpenTraffic | undefined;
  for (const port of portsOf(stream)) {
    const one = open.get(port);
    if (!one) continue;
    total = total ?? { active: 0, bytesIn: 0, bytesOut: 0 };
    total.active += one.active;
    total.bytesIn += one.bytesIn;
    total.bytesOut += one.bytesOut;
  }
  return total;
}
