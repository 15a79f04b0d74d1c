/** Fleet mode does not take port ranges (yet): refused before anything is read or written. */
import { ConductorError, ErrorCode, formatPorts, type StreamSpec } from '@stream-conductor/shared';

export function refuseRangeInFleet(spec: StreamSpec): void {
  if (spec.portEnd === undefined) return;
  throw new ConductorError(
    ErrorCode.NotSupported,
    `port ${formatPorts(spec)}: port ranges are not available in fleet mode`,
    { hint: 'define the range on a host that keeps its streams in its own file, or one stream per port' },
  );
}
