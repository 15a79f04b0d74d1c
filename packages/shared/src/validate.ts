/**
 * Validation of everything a user can send that ends up in nginx's configuration. Only values that
 * pass these functions are ever rendered, so they are deliberately narrow: a port is a plain
 * decimal number, a backend is `host:port` where host is an RFC 1123 name, a dotted-quad IPv4
 * address or a bracketed IPv6 address. Messages quote the offending value JSON-escaped so that
 * control characters never reach a terminal or a log raw.
 */
import { isIPv6 } from 'node:net';
import { ConductorError, ErrorCode } from './errors.js';

export interface PortRange {
  /** First port, inclusive. */
  start: number;
  /** Last port, inclusive. */
  end: number;
}

export type BackendKind = 'name' | 'ipv4' | 'ipv6';

export interface Backend {
  /** Host as written in nginx's configuration: a name, an IPv4 address, or `[v6]`. */
  host: string;
  port: number;
  kind: BackendKind;
  /** Canonical `host:port` text, the form stored, listed and rendered. */
  address: string;
}

const MAX_QUOTED = 80;
const MAX_BACKEND_LENGTH = 261; // a 253-character name, a colon and a 5-digit port, with room

// What JSON leaves as it is but a terminal acts on: DEL, the C1 controls (U+009B starts an escape
// sequence in some terminals), line and paragraph separators, and bidirectional marks, embeddings,
// overrides and isolates (text shown in another order than it is).
const UNPRINTABLE_BEYOND_JSON = /[\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
// The same, and the C0 controls.
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
// What no file name an operator types holds: the above, and characters that show as nothing (zero
// width spaces and joiners, word joiner and invisible operators, the byte order mark).
const UNSAFE_IN_NAME = /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/;

/**
 * The first character of `text` no file name an operator types holds (a control character, a
 * bidirectional mark or override, an invisible character), as U+XXXX; undefined when there is none.
 */
export function unsafeCharacter(text: string): string | undefined {
  const found = UNSAFE_IN_NAME.exec(text);
  return found === null ? undefined : `U+${(found[0].codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, '0')}`;
}

const escapeCodePoint = (char: string): string => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`;

/**
 * Names a value that is not text for a message without converting it: String() of a list nested
 * thousands of levels deep recurses until the stack runs out.
 */
function kindOf(value: unknown): string {
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object' && value !== null) return 'an object';
  if (typeof value === 'function' || typeof value === 'symbol') return typeof value;
  return String(value);
}

/** Quotes user input for an error message: JSON-escaped, cut to a readable length, safe to print. */
export function quote(value: unknown): string {
  const text = typeof value === 'string' ? value : kindOf(value);
  const cut = text.length > MAX_QUOTED ? `${text.slice(0, MAX_QUOTED)}...` : text;
  return JSON.stringify(cut).replace(UNPRINTABLE_BEYOND_JSON, escapeCodePoint);
}

/**
 * Text from elsewhere (another host, a log, an answer) made safe to print on a terminal or in one
 * log line: every control character escaped as \uXXXX, cut to `max` characters.
 */
export function printable(text: string, max = 1024): string {
  const cut = text.length > max ? `${text.slice(0, max)}...` : text;
  return cut.replace(UNPRINTABLE, escapeCodePoint);
}

/**
 * Shows any value a client sent in a message: text quoted (as quote does), a number, boolean or
 * null as written, a list or an object only as "a list" or "an object", however deep it is.
 */
export function shown(value: unknown): string {
  return typeof value === 'string' ? quote(value) : kindOf(value);
}

/**
 * Whether `token` may be an API token: printable ASCII without spaces, the characters an
 * Authorization header carries as they are. The daemon checks its tokens with this at start-up
 * and the CLI the one it is given, so that a mistyped token is named before any request.
 */
export function isTokenText(token: string): boolean {
  return /^[\x21-\x7e]+$/.test(token);
}

function invalid(message: string, hint?: string): ConductorError {
  return new ConductorError(ErrorCode.InvalidInput, message, { hint });
}

const DECIMAL = /^(0|[1-9][0-9]*)$/;

/** Whether `text` is a whole number written in decimal digits, the only way a port is taken. */
export function isDecimalText(text: string): boolean {
  return DECIMAL.test(text);
}

/**
 * Parses a TCP/UDP port: decimal digits only (no sign, no spaces, no leading zeros, no
 * exponent), 1-65535. `what` names the value in the message ("port", "backend port"...).
 */
export function parsePort(value: string | number, what = 'port'): number {
  const text = typeof value === 'number' ? String(value) : value;
  if (typeof text !== 'string' || !DECIMAL.test(text)) {
    throw invalid(`${what} must be a whole number from 1 to 65535, got ${quote(text)}`);
  }
  const port = Number(text);
  if (port < 1 || port > 65535) {
    throw invalid(`${what} must be a whole number from 1 to 65535, got ${text}`);
  }
  return port;
}

/** Parses an inclusive port range `START-END` (as in PORT_RANGE=9000-9009). */
export function parsePortRange(value: string): PortRange {
  const match = /^([0-9]+)-([0-9]+)$/.exec(value);
  if (!match) {
    throw invalid(`port range must look like 9000-9009 (first and last port, inclusive), got ${quote(value)}`);
  }
  const start = parsePort(match[1] ?? '', 'first port of the range');
  const end = parsePort(match[2] ?? '', 'last port of the range');
  if (start > end) {
    throw invalid(`port range ${value} is empty: the first port is above the last`);
  }
  return { start, end };
}

export function formatPortRange(range: PortRange): string {
  return `${range.start}-${range.end}`;
}

export function portRangeSize(range: PortRange): number {
  return range.end - range.start + 1;
}

export function isPortInRange(port: number, range: PortRange): boolean {
  return port >= range.start && port <= range.end;
}

/** Throws PORT_OUT_OF_RANGE unless `port` lies inside `range`. */
export function assertPortInRange(port: number, range: PortRange): void {
  if (!isPortInRange(port, range)) {
    throw new ConductorError(
      ErrorCode.PortOutOfRange,
      `port ${port} is outside the daemon's port range ${formatPortRange(range)}`,
      { hint: 'pick a port inside PORT_RANGE, or ask for a free one (conductor free-port)' },
    );
  }
}

const IPV4 = /^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$/;
const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i;

/** True for a strict dotted quad: four decimal octets 0-255 without leading zeros. */
export function isIPv4(text: string): boolean {
  const match = IPV4.exec(text);
  if (!match) return false;
  return match.slice(1).every((octet) => DECIMAL.test(octet) && Number(octet) <= 255);
}

/** Returns why `host` is not an RFC 1123 host name, or undefined when it is one. */
function hostNameProblem(host: string): string | undefined {
  if (host.length === 0) return 'the host is empty';
  if (host.length > 253) return `the host name is ${host.length} characters long (at most 253)`;
  const labels = host.split('.');
  for (const label of labels) {
    if (label.length === 0) return 'the host name has an empty label (two dots in a row, or a leading or trailing dot)';
    if (label.length > 63) return `the host name has a label of ${label.length} characters (at most 63)`;
    if (!LABEL.test(label)) {
      return `the host name label ${quote(label)} may hold only letters, digits and inner hyphens`;
    }
  }
  if (/^[0-9]+$/.test(labels[labels.length - 1] ?? '')) {
    // "10.1.2" or "1234" would be read as an IPv4 address by the resolver.
    return 'the host is neither a dotted-quad IPv4 address nor a host name (its last label is numeric)';
  }
  return undefined;
}

const BACKEND_HINT = 'a backend is host:port, e.g. mybackend:22, 10.0.0.5:5432 or [2001:db8::1]:443';

/** Parses and canonicalises a backend `host:port`. Throws INVALID_INPUT with the reason. */
export function parseBackend(value: string): Backend {
  if (typeof value !== 'string' || value.length === 0) {
    throw invalid('backend is empty', BACKEND_HINT);
  }
  if (value.length > MAX_BACKEND_LENGTH) {
    throw invalid(`backend is ${value.length} characters long (at most ${MAX_BACKEND_LENGTH})`, BACKEND_HINT);
  }
  let hostPart: string;
  let portPart: string;
  if (value.startsWith('[')) {
    const match = /^\[([^\]]*)\]:([^:]*)$/.exec(value);
    if (!match) throw invalid(`backend ${quote(value)} is not [ipv6]:port`, BACKEND_HINT);
    const inner = match[1] ?? '';
    // Zone ids (fe80::1%eth0) are interface-local; nginx's parser does not take them.
    if (inner.includes('%') || !isIPv6(inner)) {
      throw invalid(`backend ${quote(value)}: ${quote(inner)} is not an IPv6 address`, BACKEND_HINT);
    }
    const port = parsePort(match[2] ?? '', 'backend port');
    // The RFC 5952 form (1:2:3:4:5:6:7:: becomes 1:2:3:4:5:6:7:0): nginx's parser takes every
    // address in that form, not every form node takes.
    const host = new URL(`http://[${inner}]/`).hostname;
    return { host, port, kind: 'ipv6', address: `${host}:${port}` };
  }
  const colon = value.lastIndexOf(':');
  if (colon < 0) throw invalid(`backend ${quote(value)} has no port`, BACKEND_HINT);
  hostPart = value.slice(0, colon);
  portPart = value.slice(colon + 1);
  if (hostPart.includes(':')) {
    if (isIPv6(hostPart)) {
      throw invalid(`backend ${quote(value)}: an IPv6 address must be in brackets, e.g. [${hostPart}]:${portPart}`);
    }
    throw invalid(`backend ${quote(value)} is not host:port`, BACKEND_HINT);
  }
  const port = parsePort(portPart, 'backend port');
  if (isIPv4(hostPart)) {
    return { host: hostPart, port, kind: 'ipv4', address: `${hostPart}:${port}` };
  }
  if (/^[0-9.]+$/.test(hostPart)) {
    throw invalid(`backend ${quote(value)}: ${quote(hostPart)} is not a valid IPv4 address`, BACKEND_HINT);
  }
  const problem = hostNameProblem(hostPart);
  if (problem !== undefined) throw invalid(`backend ${quote(value)}: ${problem}`, BACKEND_HINT);
  // DNS names are case-insensitive; one spelling keeps listings and comparisons simple.
  const host = hostPart.toLowerCase();
  return { host, port, kind: 'name', address: `${host}:${port}` };
}
