/**
 * Port ranges: one stream on consecutive ports (`30000-30100`), each port forwarded to the same
 * port of its backends, or to a port shifted by a fixed offset (backend `host:40000` for the
 * range's first port 30000 sends 30001 to 40001, and so on). A range is one definition, named by
 * its first port (`port`) with `portEnd` its last; a single-port stream has no `portEnd`.
 */
import { ConductorError, ErrorCode } from './errors.js';
import { formatPortRange, type PortRange, parseBackend, quote } from './validate.js';

/** Widest range a stream may take: 1000 ports (see BENCHMARKS.md, port ranges). */
export const MAX_RANGE_PORTS = 1000;

/** What a range needs of a spec. */
export interface PortSpan {
  port: number;
  portEnd?: number;
}

function invalid(field: string, message: string, hint?: string): ConductorError {
  return new ConductorError(ErrorCode.InvalidInput, `${field}: ${message}`, { hint });
}

const RANGE_HINT = 'a range is FIRST-LAST, such as 30000-30100 (at most 1000 ports)';

/** The last port of a stream: portEnd for a range, its port otherwise. */
export function lastPort(span: PortSpan): number {
  return span.portEnd ?? span.port;
}

/** Every port a stream listens on, first to last. */
export function portsOf(span: PortSpan): number[] {
  const last = lastPort(span);
  return Array.from({ length: last - span.port + 1 }, (_, index) => span.port + index);
}

/** Whether `port` is one of the stream's ports. */
export function spanHas(span: PortSpan, port: number): boolean {
  return port >= span.port && port <= lastPort(span);
}

/** Whether two streams share a port. */
export function spansOverlap(a: PortSpan, b: PortSpan): boolean {
  return a.port <= lastPort(b) && b.port <= lastPort(a);
}

/** The first port two streams share (the one a refusal names), or undefined. */
export function firstSharedPort(a: PortSpan, b: PortSpan): number | undefined {
  return spansOverlap(a, b) ? Math.max(a.port, b.port) : undefined;
}

/** `30000-30100` for a range, `9000` for a single port. */
export function formatPorts(span: PortSpan): string {
  return span.portEnd === undefined ? String(span.port) : `${span.port}-${span.portEnd}`;
}

/** Whether a port text is a range (digits, a dash, digits), as opposed to a single port. */
export function isRangeText(text: string): boolean {
  return text.includes('-');
}

/**
 * Reads `FIRST-LAST`: both whole ports, FIRST below LAST, at most MAX_RANGE_PORTS ports. A range
 * of one port (`9000-9000`) is that port. Every refusal quotes the value.
 */
export function parsePortSpan(value: string, field = 'port'): PortSpan {
  const match = /^([1-9][0-9]{0,4})-([1-9][0-9]{0,4})$/.exec(value);
  if (!match) throw invalid(field, `${quote(value)} is not a port range`, RANGE_HINT);
  const port = Number(match[1]);
  const end = Number(match[2]);
  if (port > 65535 || end > 65535) throw invalid(field, `${quote(value)}: a port is at most 65535`, RANGE_HINT);
  if (end < port) throw invalid(field, `${quote(value)} is reversed: the first port is above the last`, RANGE_HINT);
  if (end - port + 1 > MAX_RANGE_PORTS)
    throw invalid(
      field,
      `${quote(value)} spans ${end - port + 1} ports, more than ${MAX_RANGE_PORTS}`,
      'split it into several ranges',
    );
  return end === port ? { port } : { port, portEnd: end };
}

/**
 * The backend text of a range as stored: `host` alone means the same port (the range's first),
 * `host:port` the backend port of the first port. Single-port streams keep host:port required.
 */
export function rangeBackendText(text: string, span: PortSpan): string {
  if (span.portEnd === undefined) return text;
  const bracketed = text.startsWith('[') && text.endsWith(']');
  const bare = !text.startsWith('[') && !text.includes(':');
  return bracketed || bare ? `${text}:${span.port}` : text;
}

/** Refuses a backend whose shifted ports would run past 65535, naming it. */
export function checkRangeBackend(address: string, span: PortSpan, field: string): void {
  if (span.portEnd === undefined) return;
  const backend = parseBackend(address);
  const last = backend.port + (span.portEnd - span.port);
  if (last > 65535)
    throw invalid(
      field,
      `${quote(address)} for ports ${formatPorts(span)} would need backend port ${last}, above 65535`,
      `the backend ports run from ${backend.port} for ${span.port} to ${last} for ${span.portEnd}`,
    );
}

/** The backend address for one port of a range: the stored address shifted by the port's place. */
export function backendForPort(address: string, span: PortSpan, port: number): string {
  if (span.portEnd === undefined || port === span.port) return address;
  const backend = parseBackend(address);
  const shifted = backend.port + (port - span.port);
  return `${backend.host}:${shifted}`;
}

/** How a range's backend is shown: `host:30000-30100` (each port to its own), for lists. */
export function describeRangeBackend(address: string, span: PortSpan): string {
  if (span.portEnd === undefined) return address;
  const backend = parseBackend(address);
  return `${backend.host}:${backend.port}-${backend.port + (span.portEnd - span.port)}`;
}

/** Throws PORT_OUT_OF_RANGE unless every port of the stream lies inside `range`, naming the first outside. */
export function assertSpanInRange(span: PortSpan, range: PortRange): void {
  if (span.port >= range.start && lastPort(span) <= range.end) return;
  // The first port of the stream that lies outside.
  const outside = span.port < range.start || span.port > range.end ? span.port : range.end + 1;
  throw new ConductorError(
    ErrorCode.PortOutOfRange,
    span.portEnd === undefined
      ? `port ${span.port} is outside the daemon's port range ${formatPortRange(range)}`
      : `ports ${formatPorts(span)} are not all inside the daemon's port range ${formatPortRange(range)} (port ${outside} is outside)`,
    { hint: 'pick ports inside PORT_RANGE, or ask for a free one (conductor free-port)' },
  );
}
