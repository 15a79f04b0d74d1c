/**
 * The service's part of port ranges: a range takes every port from its first to its last, so a
 * new stream may use none of them, a port inside one finds it, and its ports are removed together.
 */
import {
  assertSpanInRange,
  ConductorError,
  describeStreamBackends,
  ErrorCode,
  formatPorts,
  type PortRange,
  type StreamSpec,
  spanHas,
  spansOverlap,
} from '@stream-conductor/shared';
import type { Entry } from '../nginx/instance.js';

/** What the checks here read of a stream: its record (a pipeline's entry, or a fleet's desired stream). */
type Held = Pick<Entry, 'record'>;

/** The stream whose range holds `port`, if any. */
export function coveringEntry<T extends Held>(entries: readonly T[], port: number): T | undefined {
  return entries.find((entry) => entry.record.portEnd !== undefined && spanHas(entry.record, port));
}

/**
 * Refuses a spec with a port outside `range`, or one that shares a port with another stream (a
 * stream on the spec's own first port is a replacement, judged further on). Names the port.
 */
export function checkSpan(spec: StreamSpec, range: PortRange, entries: readonly Held[]): void {
  assertSpanInRange(spec, range);
  for (const entry of entries) {
    if (entry.record.port === spec.port || !spansOverlap(entry.record, spec)) continue;
    const port = Math.max(entry.record.port, spec.port);
    throw new ConductorError(
      ErrorCode.StreamExists,
      `port ${port} already has a stream (${formatPorts(entry.record)} to ${describeStreamBackends(entry.record)})`,
      {
        hint:
          entry.record.portEnd === undefined
            ? 'remove it first, or pick ports that no stream uses'
            : `it is part of the range ${formatPorts(entry.record)}: remove the range first (conductor rm ${formatPorts(entry.record)}), or pick ports outside it`,
      },
    );
  }
}

/**
 * A port inside a range other than its first is not a stream of its own: removing or draining it
 * is refused, with the range to remove or drain named, so that no one takes a whole range out of
 * service by naming one of its ports.
 */
export function refuseRangePart(entry: Held | undefined, port: number, action: 'rm' | 'drain'): void {
  if (entry?.record.portEnd === undefined || entry.record.port === port) return;
  const range = formatPorts(entry.record);
  throw new ConductorError(
    ErrorCode.Conflict,
    `port ${port} is part of the range ${range}: a range is ${action === 'rm' ? 'removed' : 'drained'} whole`,
    { hint: `${action === 'rm' ? 'remove' : 'drain'} the range: conductor ${action} ${range}` },
  );
}
