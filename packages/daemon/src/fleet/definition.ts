/**
 * What the fleet holds of a stream, next to what a host serves. TLS on a stream names files by
 * path (tlsCert, tlsKey, backendCa) on each host's own disk: the fleet's record carries the paths
 * only, and each host's local service reads, checks and copies its own files when it applies the
 * stream, and picks up their renewals (service/stream-tls.ts). The copies it made (tlsMaterial)
 * are that host's, so a host serves the fleet's stream when the two agree with the copies left
 * aside; and a stream goes to a host's service without any copies a value in the store may carry.
 */
import { type StreamSpec, sameSpec } from '@stream-conductor/shared';

/** `spec` without a host's copies of its TLS files. */
export function withoutCopies<T extends StreamSpec>(spec: T): T {
  if (spec.tlsMaterial === undefined) return spec;
  const copy = { ...spec };
  delete copy.tlsMaterial;
  return copy;
}

/** Whether a host's stream (`here`) is the fleet's (`fleet`): the same definition, copies aside. */
export function sameDefinition(here: StreamSpec, fleet: StreamSpec): boolean {
  return sameSpec(withoutCopies(here), withoutCopies(fleet));
}
