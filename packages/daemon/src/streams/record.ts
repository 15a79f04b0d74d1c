/**
 * Reading a stored stream back. The store is a file an operator could edit by hand, so each entry
 * is validated again exactly like API input (an entry that fails is skipped and reported, never
 * rendered). Entries written before streams had options (`{port, backend, createdAt}`) still load.
 */
import { parseStreamInput, type StreamRecord } from '@stream-conductor/shared';

const ISO = /^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$/;

function isoTime(value: unknown, field: string): string {
  if (typeof value !== 'string' || !ISO.test(value) || Number.isNaN(Date.parse(value)))
    throw new Error(`${field} is not an ISO 8601 UTC time`);
  return value;
}

export function recordFromJson(entry: unknown): StreamRecord {
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) throw new Error('not an object');
  const { createdAt, updatedAt, expiresAt, drainingUntil, connectTimeoutMs, idleTimeoutMs, ...rest } = entry as Record<
    string,
    unknown
  >;
  const input: Record<string, unknown> = { ...rest };
  if (connectTimeoutMs !== undefined) input.connectTimeout = `${String(connectTimeoutMs)}ms`;
  if (idleTimeoutMs !== undefined) input.idleTimeout = `${String(idleTimeoutMs)}ms`;
  // Expiry is checked on its own: a stream that expired while the daemon was down still loads
  // (and is then removed), where the API would refuse an expiry in the past.
  const spec = parseStreamInput(input, { now: new Date() });
  const record: StreamRecord = {
    ...spec,
    createdAt: createdAt === undefined ? new Date(0).toISOString() : isoTime(createdAt, 'createdAt'),
  };
  if (updatedAt !== undefined) record.updatedAt = isoTime(updatedAt, 'updatedAt');
  if (expiresAt !== undefined) record.expiresAt = isoTime(expiresAt, 'expiresAt');
  if (drainingUntil !== undefined) record.drainingUntil = isoTime(drainingUntil, 'drainingUntil');
  return record;
}
