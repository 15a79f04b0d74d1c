/**
 * Fleet mode does not take routes by TLS server name (yet): refused (501) before anything is read
 * or written. A route change is a read-modify-write of one definition, which needs the fleet's
 * conditional write of its own.
 */
import { ConductorError, ErrorCode, type StreamSpec } from '@stream-conductor/shared';

export function routesNotInFleet(port: number): ConductorError {
  return new ConductorError(
    ErrorCode.NotSupported,
    `port ${port}: routes by TLS server name are not available in fleet mode`,
    { hint: 'define the routes on a host that keeps its streams in its own file' },
  );
}

export function refuseRoutesInFleet(specs: StreamSpec[]): void {
  const routed = specs.find((spec) => spec.routes !== undefined);
  if (routed !== undefined) throw routesNotInFleet(routed.port);
}
