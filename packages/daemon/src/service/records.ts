/**
 * The small record rules both services (local and fleet) follow: a record's times, the spec
 * under a record, a renewal, and the view of a local entry.
 */
import type { StreamRecord, StreamSpec, StreamView } from '@stream-conductor/shared';
import type { Entry } from '../nginx/instance.js';

/** The record `spec` becomes at `now`: a replacement keeps its creation time and gets an update time. */
export function stampRecord(spec: StreamSpec, existing: StreamRecord | undefined, now: Date): StreamRecord {
  const at = now.toISOString();
  return existing ? { ...spec, createdAt: existing.createdAt, updatedAt: at } : { ...spec, createdAt: at };
}

/** The definition under a record, without its times. */
export function specOf(record: StreamRecord): StreamSpec {
  const { createdAt: _created, updatedAt: _updated, drainingUntil: _draining, ...spec } = record;
  return spec;
}

/** The spec that renews `record` to `expiresAt` (undefined: it never expires). */
export function renewedSpec(record: StreamRecord, expiresAt: string | undefined): StreamSpec {
  const spec = specOf(record);
  if (expiresAt === undefined) delete spec.expiresAt;
  else spec.expiresAt = expiresAt;
  return spec;
}

/** How the APIs show a stream this host holds. */
export function viewOf(entry: Entry): StreamView {
  const stream: StreamView = { ...entry.record, state: entry.state };
  if (entry.reason !== undefined) stream.reason = entry.reason;
  return stream;
}
