/**
 * Free-port allocation in the port range, and the one "no free port left" error. Pure over what
 * the caller says is taken and what the probe says of the host, so the local service and the
 * fleet share it.
 */
import { ConductorError, ErrorCode, type PortRange } from '@stream-conductor/shared';
import type { PortProbe } from '../sys/ports.js';

export function noFreePort(): ConductorError {
  return new ConductorError(ErrorCode.NoFreePort, 'no free port left in the port range', {
    hint: 'remove streams, or widen PORT_RANGE',
  });
}

export interface PortSearch {
  range: PortRange;
  /** Ports an automatic allocation is trying right now. */
  reserved: Set<number>;
  /** Whether a port is spoken for already (a stream stands on it, or a change is under way). */
  taken(port: number): boolean;
  /** Whether some process of the host holds the port now. */
  probe(port: number): Promise<PortProbe>;
}

/**
 * The first port of the range that is neither taken nor reserved and that no other process holds
 * either. It is not reserved: two callers may be told the same port, and the second create is
 * refused.
 */
export async function firstFreePort(search: PortSearch): Promise<number | undefined> {
  const { start, end } = search.range;
  for (let port = start; port <= end; port += 1) {
    if (search.taken(port) || search.reserved.has(port)) continue;
    if ((await search.probe(port)) === 'free') return port;
  }
  return undefined;
}

/**
 * Allocation that holds under concurrency: try the first port that looks free; when another
 * request or process won it meanwhile (`attempt` throws one of `retryOn`, or answers undefined),
 * the next port is tried. The port is reserved while `attempt` runs. Throws noFreePort() when the
 * range is exhausted.
 */
export async function createOnFreePort<T>(
  search: PortSearch & { retryOn: readonly ErrorCode[] },
  attempt: (port: number) => Promise<T | undefined>,
): Promise<T> {
  const { start, end } = search.range;
  const spoken = (port: number): boolean => search.reserved.has(port) || search.taken(port);
  for (let port = start; port <= end; port += 1) {
    if (spoken(port)) continue;
    if ((await search.probe(port)) !== 'free') continue;
    if (spoken(port)) continue; // taken while the probe ran
    search.reserved.add(port);
    try {
      const result = await attempt(port);
      if (result !== undefined) return result;
    } catch (error) {
      if (error instanceof ConductorError && search.retryOn.includes(error.code)) continue;
      throw error;
    } finally {
      search.reserved.delete(port);
    }
  }
  throw noFreePort();
}
