/**
 * Fleet's copies of what the local service (conductor.ts) also does: allocation of a free port,
 * expiry, renewal, the answer to a write, and the "no free port left" refusal. Kept together here,
 * apart from the fleet's own logic, to be shared with the local service in one place.
 */
import {
  ConductorError,
  type CreateResult,
  describeBackends,
  ErrorCode,
  type PortRange,
  type StreamRecord,
  type StreamSpec,
  type StreamView,
  sameSpec,
} from '@stream-conductor/shared';
import type { PortProbe } from '../sys/ports.js';
import { specOf } from './keys.js';

export function noFreePortError(): ConductorError {
  return new ConductorError(ErrorCode.NoFreePort, 'no free port left in the port range', {
    hint: 'remove streams, or widen PORT_RANGE',
  });
}

export function isExpired(record: StreamRecord, now: Date): boolean {
  return record.expiresAt !== undefined && Date.parse(record.expiresAt) <= now.getTime();
}

/** The spec of a standing stream with a new expiry (undefined: none). */
export function renewedSpec(standing: StreamRecord, expiresAt: string | undefined): StreamSpec {
  const spec = specOf(standing);
  if (expiresAt === undefined) delete spec.expiresAt;
  else spec.expiresAt = expiresAt;
  return spec;
}

/**
 * The first port of `range` that is not `taken` and that no other process holds either. It is not
 * reserved: two callers may be told the same port, and the second create is refused.
 */
export async function firstFreePort(
  range: PortRange,
  taken: (port: number) => boolean,
  probe: (port: number) => Promise<PortProbe>,
): Promise<number | undefined> {
  for (let port = range.start; port <= range.end; port += 1) {
    if (taken(port)) continue;
    if ((await probe(port)) === 'free') return port;
  }
  return undefined;
}

/**
 * Allocation that holds under concurrency: try the first port that looks free (`reserved` while
 * tried); when another request, process or host won it meanwhile (`lost` says so of the error),
 * the next port is tried.
 */
export async function createOnFreePort(options: {
  range: PortRange;
  reserved: Set<number>;
  taken(port: number): boolean;
  probe(port: number): Promise<PortProbe>;
  /** Creates the stream on `port`; undefined when the port turns out to be taken after all. */
  attempt(port: number): Promise<CreateResult | undefined>;
  lost(error: ConductorError): boolean;
}): Promise<CreateResult> {
  const { range, reserved } = options;
  for (let port = range.start; port <= range.end; port += 1) {
    if (reserved.has(port) || options.taken(port)) continue;
    if ((await options.probe(port)) !== 'free') continue;
    if (reserved.has(port) || options.taken(port)) continue;
    reserved.add(port);
    try {
      const result = await options.attempt(port);
      if (result !== undefined) return result;
    } catch (error) {
      if (error instanceof ConductorError && options.lost(error)) continue;
      throw error;
    } finally {
      reserved.delete(port);
    }
  }
  throw noFreePortError();
}

/**
 * The answer to a change that was applied as `applied`, given the port's view now (`stream`) and
 * the stream the fleet holds now (`now`). When another client's change to the port came right
 * after it (a remove or replace that won next), the answer still says what this change did, and
 * warns that it is no longer what the port holds.
 */
export function answer(
  port: number,
  stream: StreamView | undefined,
  now: StreamRecord | undefined,
  result: { warnings: string[]; change: CreateResult['change']; applied: StreamRecord },
): CreateResult {
  const { warnings, change, applied } = result;
  if (stream && sameSpec(stream, applied)) return { stream, warnings, change };
  const after = now ? `replaced it (to ${describeBackends(now.backends)})` : 'removed it';
  return {
    stream: { ...applied, state: 'live', hosts: [] },
    warnings: [...warnings, `this change was applied, then another client's change to port ${port} ${after}`],
    change,
  };
}
