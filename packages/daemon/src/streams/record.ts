/**
 * Reading a stored stream back. The store is a file an operator could edit by hand, so each entry
 * is validated again exactly like API input (an entry that fails is skipped and reported, never
 * rendered). Entries written before streams had options (`{port, backend, createdAt}`) still load.
 */
import { basename, isAbsolute } from 'node:path';
import { type CertificateFacts, parseStreamInput, type StreamRecord, type TlsMaterial } from '@stream-conductor/shared';

const ISO = /^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$/;

function isoTime(value: unknown, field: string): string {
  if (typeof value !== 'string' || !ISO.test(value) || Number.isNaN(Date.parse(value)))
    throw new Error(`${field} is not an ISO 8601 UTC time`);
  return value;
}

export function recordFromJson(entry: unknown): StreamRecord {
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) throw new Error('not an object');
  const { createdAt, updatedAt, expiresAt, drainingUntil, connectTimeoutMs, idleTimeoutMs, tlsMaterial, ...rest } =
    entry as Record<string, unknown>;
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
  if (tlsMaterial !== undefined) record.tlsMaterial = materialFromJson(tlsMaterial);
  return record;
}

const MATERIAL_ID = /^[0-9a-f]{32}$/;
const PARTS = ['cert', 'key', 'ca'] as const;
const FACT_FIELDS = ['tlsCert', 'backendCa'] as const;

/**
 * The daemon's record of the checked copies of a stream's TLS files. Its paths go into nginx's
 * configuration, so each must be what the daemon itself writes: an absolute path whose name is the
 * material's id and the part (`<id>.cert.pem`), printable, with no quote or semicolon.
 */
function materialFromJson(value: unknown): TlsMaterial {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new Error('tlsMaterial is not an object');
  const { id, certificates, ...paths } = value as Record<string, unknown>;
  if (typeof id !== 'string' || !MATERIAL_ID.test(id)) throw new Error('tlsMaterial.id is not a digest');
  const material: TlsMaterial = { id, certificates: [] };
  for (const [part, path] of Object.entries(paths)) {
    if (!(PARTS as readonly string[]).includes(part)) throw new Error(`tlsMaterial.${part}: unknown field`);
    if (
      typeof path !== 'string' ||
      !isAbsolute(path) ||
      basename(path) !== `${id}.${part}.pem` ||
      !/^[\x21-\x7e]+$/.test(path) ||
      /["';{}\\]/.test(path)
    )
      throw new Error(`tlsMaterial.${part} is not a copy the daemon made`);
    material[part as (typeof PARTS)[number]] = path;
  }
  if (!Array.isArray(certificates)) throw new Error('tlsMaterial.certificates is not a list');
  material.certificates = certificates.map((fact, index) => factsFromJson(fact, `tlsMaterial.certificates[${index}]`));
  return material;
}

function factsFromJson(value: unknown, at: string): CertificateFacts {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error(`${at} is not an object`);
  const { field, subject, notBefore, notAfter, fingerprint256 } = value as Record<string, unknown>;
  if (!(FACT_FIELDS as readonly unknown[]).includes(field)) throw new Error(`${at}.field is not tlsCert or backendCa`);
  if (typeof subject !== 'string' || typeof fingerprint256 !== 'string')
    throw new Error(`${at}: subject and fingerprint256 must be text`);
  return {
    field: field as CertificateFacts['field'],
    subject,
    notBefore: isoTime(notBefore, `${at}.notBefore`),
    notAfter: isoTime(notAfter, `${at}.notAfter`),
    fingerprint256,
  };
}
