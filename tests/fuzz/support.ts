/**
 * Shared pieces of the hostile-input property tests: a raw HTTP client that puts exactly the
 * bytes it is given on the wire, an encoder that decides how every byte of a raw string is
 * spelled in a URL path, fast-check arbitraries of hostile ports, backends and texts, and a
 * fixture around one real daemon that can snapshot the rendered configuration byte for byte and
 * bring it back to its baseline after a request that was allowed to succeed.
 *
 * Safety rules every generator here keeps (see README "Tests" and the workplace's network rules):
 * - traffic goes to 127.0.0.1 only: the daemon's API, nothing else;
 * - no generated backend makes nginx resolve a host name through DNS: a backend that passes the
 *   daemon's validation as a host name other than `localhost` (which /etc/hosts answers) is
 *   filtered out (see `queriesDns`), so valid creates use IP literals and `localhost`;
 * - no generated input mentions `tmp`, so an answer that contains `/tmp/` is always the daemon's
 *   own leak and never an echo of the request.
 */
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { isIP } from 'node:net';
import { basename, dirname, join } from 'node:path';
import { expect } from '@jest/globals';
import { parseBackend } from '@stream-conductor/shared';
import fc from 'fast-check';
import { type Daemon, type DaemonOptions, removeDir, startDaemon } from '../helpers/daemon.js';
import { renderedStreams } from '../helpers/state.js';

// ---------------------------------------------------------------------------------------------
// Raw HTTP
// ---------------------------------------------------------------------------------------------

export interface WireRequest {
  method: string;
  /** The request target exactly as it goes on the wire (ASCII, or latin1 for raw high bytes). */
  path: string;
  headers?: Record<string, string>;
  body?: Buffer;
}

export interface RawAnswer {
  status: number;
  contentType: string | undefined;
  text: string;
  /** The parsed body; `undefined` when the body is not JSON. */
  json: unknown;
  isJson: boolean;
}

/**
 * Sends one request over a fresh connection with node:http, which writes `path` as it is (no
 * normalisation of `..`, no re-encoding; characters U+0080-U+00FF go out as single raw bytes).
 */
export function rawRequest(port: number, req: WireRequest, timeoutMs = 20_000): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { connection: 'close', ...(req.headers ?? {}) };
    if (req.body !== undefined && !Object.keys(headers).some((name) => name.toLowerCase() === 'transfer-encoding')) {
      headers['content-length'] = req.body.length;
    }
    const client = httpRequest(
      { host: '127.0.0.1', port, method: req.method, path: req.path, headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', reject);
        res.on('end', () => {
          clearTimeout(timer);
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          let isJson = false;
          try {
            json = JSON.parse(text);
            isJson = true;
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, contentType: res.headers['content-type'], text, json, isJson });
        });
      },
    );
    const timer = setTimeout(() => {
      client.destroy(new Error(`no answer within ${timeoutMs} ms to ${req.method} ${req.path.slice(0, 200)}`));
    }, timeoutMs);
    client.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    client.end(req.body);
  });
}

// ---------------------------------------------------------------------------------------------
// Encoding raw strings into URL path bytes
// ---------------------------------------------------------------------------------------------

/**
 * How the bytes of a raw string are spelled on the wire:
 * - `pchar`: what a careful client sends: unreserved characters and `!$&'()*+,;=:@` raw, the rest
 *   percent-encoded (so `;`, `$` and quotes go raw, `/`, `%`, `?`, `#`, spaces and non-ASCII do not);
 * - `loose`: every printable ASCII byte raw (including `/`, `%`, `?`, `#`), the rest encoded;
 * - `every`: every byte percent-encoded, letters and digits included;
 * - `double`: everything but letters and digits encoded twice (`;` -> `%253B`);
 * - `overlong`: ASCII punctuation as two-byte overlong UTF-8 (`/` -> `%C0%AF`), non-ASCII encoded.
 */
export type Encoding = 'pchar' | 'loose' | 'every' | 'double' | 'overlong';

const UNRESERVED_OR_SUBDELIM = /^[A-Za-z0-9\-._~!$&'()*+,;=:@]$/;
const ALNUM = /^[A-Za-z0-9]$/;

function hex(byte: number, lower: boolean): string {
  const text = byte.toString(16).padStart(2, '0');
  return lower ? text : text.toUpperCase();
}

export function encodeText(text: string, encoding: Encoding, lowerHex = false): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    const char = String.fromCharCode(byte);
    const pct = `%${hex(byte, lowerHex)}`;
    switch (encoding) {
      case 'pchar':
        out += byte < 0x80 && UNRESERVED_OR_SUBDELIM.test(char) ? char : pct;
        break;
      case 'loose':
        out += byte > 0x20 && byte < 0x7f ? char : pct;
        break;
      case 'every':
        out += pct;
        break;
      case 'double':
        out += byte < 0x80 && ALNUM.test(char) ? char : `%25${hex(byte, lowerHex)}`;
        break;
      case 'overlong':
        if (byte < 0x80 && ALNUM.test(char)) out += char;
        else if (byte < 0x80) out += `%${hex(0xc0 | (byte >> 6), lowerHex)}%${hex(0x80 | (byte & 0x3f), lowerHex)}`;
        else out += pct;
        break;
    }
  }
  return out;
}

/** Raw wire fragments spliced into encoded segments: encoding tricks and traversal. */
export const WIRE_TOKENS = [
  '%253B',
  '%2523',
  '%252F',
  '%2F',
  '%2f',
  '%2e',
  '%2e%2e',
  '%2E%2E%2F',
  '..%2F',
  '..%2f',
  '%2e%2e%2f',
  '../',
  './',
  '..',
  '.',
  '%C0%AF',
  '%c0%ae%c0%ae%c0%af',
  '%C1%9C',
  '%E0%80%AF',
  '%E0%A4%A',
  '%E0%A4',
  '%',
  '%%',
  '%zz',
  '%G0',
  '%0',
  '%00',
  '%FF',
  '%ED%A0%80',
  '%F4%90%80%80',
  '%EF%BB%BF',
  '%3B',
  '%7B',
  '%7D',
  '%23',
  '%24',
  '%22',
  '%27',
  '%5C',
  '%5c..%5c',
  '%20',
  '%09',
  '%0A',
  '%0D',
  '%0D%0A',
  '%0d%0a%0d%0a',
  '//',
  ';',
  '$',
  "'",
  '!',
  '*',
  '~',
  '@',
  ':',
  '[',
  ']',
  '(',
  ')',
  '+',
  '&',
  '=',
  ',',
  '%u002F',
  '%%32%46',
  '%252e%252e%252f',
] as const;

export const encodingArb: fc.Arbitrary<Encoding> = fc.constantFrom<Encoding>(
  'pchar',
  'pchar',
  'pchar',
  'loose',
  'every',
  'double',
  'overlong',
);

/** Longest request target sent by the main properties: well below node's 16 KiB header limit. */
export const MAX_WIRE_PATH = 12_000;

/** A raw string encoded for the wire, sometimes with raw tricks spliced in at random places. */
export function wire(text: fc.Arbitrary<string>): fc.Arbitrary<string> {
  const splices = fc.oneof(
    { weight: 3, arbitrary: fc.constant<[number, string][]>([]) },
    {
      weight: 1,
      arbitrary: fc.array(fc.tuple(fc.nat(), fc.constantFrom(...WIRE_TOKENS)), { minLength: 1, maxLength: 3 }),
    },
  );
  return fc.tuple(text, encodingArb, fc.boolean(), splices).map(([raw, encoding, lower, inserts]) => {
    let out = encodeText(raw, encoding, lower);
    for (const [at, token] of inserts) {
      const index = at % (out.length + 1);
      out = `${out.slice(0, index)}${token}${out.slice(index)}`;
    }
    return out;
  });
}

// ---------------------------------------------------------------------------------------------
// Hostile values
// ---------------------------------------------------------------------------------------------

/** nginx configuration metacharacters and control characters. */
export const META = [';', '{', '}', '#', '$', "'", '"', '\\', ' ', '\t', '\n', '\r'] as const;

const ATOMS = [
  ...META,
  '\u0000',
  '\u001b[31m',
  '\u007f',
  'include',
  'include /etc/nginx/nginx.conf;',
  'include /etc/passwd',
  'unix:',
  'unix:/var/run/nginx.sock',
  'unix:/run/x.sock',
  '${host}',
  '$remote_addr',
  'proxy_pass',
  'proxy_timeout 1s',
  'server {',
  'listen 80;',
  '}server{',
  '\u00e9',
  '\u00fc',
  '\u00df',
  '\u0130',
  '\u212a',
  '\u017f',
  '\ud83d\ude00',
  '\ud83d\udc69\u200d\ud83d\udcbb',
  '\u202e',
  '\ufeff',
  '\u200b',
  '\u00a0',
  '\u2028',
  '\uff21',
  '\uff11',
  '\u0663',
  '\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54',
  '\u3002',
  '../',
  '..\\',
  '..',
  '/',
  '%',
  '%2F',
  '%253B',
  '?',
  '&',
  '=',
  ':',
  '[',
  ']',
  '@',
  '*',
  'a',
  '1',
  '.',
  '-',
  'localhost',
  '127.0.0.1',
  '::1',
] as const;

/** A string that would be long after encoding: repeated pieces, 64 to 3000 characters. */
const longText = fc
  .tuple(
    fc.constantFrom('a', 'a.', '-', ';', '\ud83d\ude00', '\u00e9', '{}', '%', '1', 'ab-'),
    fc.integer({ min: 64, max: 3000 }),
  )
  .map(([piece, length]) => piece.repeat(Math.ceil(length / piece.length)).slice(0, length));

/** Anything a hostile client might type: metacharacters, nginx syntax, non-ASCII, emoji, long. */
export const hostileText: fc.Arbitrary<string> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc
      .array(fc.oneof(fc.constantFrom(...ATOMS), fc.string({ maxLength: 3 })), { maxLength: 6 })
      .map((parts) => parts.join('')),
  },
  { weight: 2, arbitrary: fc.string({ unit: fc.constantFrom(...META, 'a', '1', '.', ':', '-'), maxLength: 16 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 12 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 12 }) },
  { weight: 1, arbitrary: longText },
);

export interface Range {
  start: number;
  end: number;
}

const PORT_SPECIALS = [
  '0',
  '00',
  '000',
  '65536',
  '65535',
  '99999',
  '100000',
  '-1',
  '-0',
  '+0',
  '+1',
  '4294967296',
  '18446744073709551616',
  '9'.repeat(40),
  '1e4',
  '9e3',
  '1E3',
  '0x10',
  '0X2328',
  '0o21',
  '0b1',
  'NaN',
  'Infinity',
  '-Infinity',
  '',
  ' ',
  '1.0',
  '.5',
  '5.',
  '0.0',
  '\u0661\u0662',
  '\uff19\uff10\uff10\uff10',
  '1_000',
  '1,000',
  '0 ',
  ' 1',
  '\t1',
  '1\n',
  '1;',
  '1#',
  '%31',
  'one',
  'null',
  'undefined',
  'true',
  '[]',
  '{}',
] as const;

/** Port texts: in the range, valid but elsewhere, and every malformed spelling we could think of. */
export function portText(range: Range): fc.Arbitrary<string> {
  const inRange = fc.integer({ min: range.start, max: range.end });
  return fc.oneof(
    { weight: 5, arbitrary: inRange.map(String) },
    { weight: 2, arbitrary: fc.integer({ min: 1, max: 65535 }).map(String) },
    { weight: 3, arbitrary: fc.constantFrom(...PORT_SPECIALS) },
    {
      weight: 2,
      arbitrary: fc
        .tuple(
          fc.constantFrom(
            '0',
            '00',
            '+',
            '-',
            ' ',
            '\t',
            '\n',
            '\r',
            ';',
            '#',
            "'",
            '"',
            '\\',
            '$',
            '{',
            '}',
            '\u0660',
            '\uff10',
          ),
          inRange,
        )
        .map(([prefix, port]) => `${prefix}${port}`),
    },
    {
      weight: 2,
      arbitrary: fc
        .tuple(
          inRange,
          fc.constantFrom(
            '.0',
            '.5',
            'e0',
            ';',
            ' ',
            '\n',
            '\r\n',
            '#',
            '}',
            '%',
            '/',
            '\\',
            '$',
            'abc',
            '\u0000',
            '\ud83d\ude00',
            ' include x',
          ),
        )
        .map(([port, suffix]) => `${port}${suffix}`),
    },
    {
      weight: 1,
      arbitrary: fc
        .tuple(inRange, fc.constantFrom(16, 8, 2))
        .map(([port, radix]) => `${radix === 16 ? '0x' : radix === 8 ? '0o' : '0b'}${port.toString(radix)}`),
    },
    { weight: 1, arbitrary: fc.integer({ min: -100_000, max: -1 }).map(String) },
    { weight: 1, arbitrary: fc.integer({ min: 65_536, max: 2 ** 31 }).map(String) },
    { weight: 1, arbitrary: fc.double().map(String) },
    { weight: 1, arbitrary: hostileText },
  );
}

/** Hosts that need no DNS: IP literals and `localhost` (answered by /etc/hosts). */
const SAFE_HOSTS = [
  '127.0.0.1',
  'localhost',
  'LocalHost',
  '[::1]',
  '[::ffff:127.0.0.1]',
  '[0:0:0:0:0:0:0:1]',
  '127.0.0.2',
  '[::1]',
] as const;

/** A backend the daemon should accept (`host:port` with a host that needs no DNS). */
export const validBackend: fc.Arbitrary<string> = fc
  .tuple(fc.constantFrom(...SAFE_HOSTS), fc.integer({ min: 1, max: 65535 }))
  .map(([host, port]) => `${host}:${port}`);

const INJECTIONS = [
  'a:1;proxy_timeout 1s',
  '127.0.0.1:22;proxy_timeout 1s',
  'x;y:22',
  'x{:22',
  'x}:22',
  'x#y:22',
  'x\ny:22',
  'x y:22',
  '"x":22',
  "'x':22",
  '$x:22',
  'x\\y:22',
  '127.0.0.1:22}server{listen 1;proxy_pass 127.0.0.1:2;}',
  '127.0.0.1:22; include /etc/passwd',
  'include /etc/passwd:1',
  'include /etc/nginx/*.conf',
  'unix:/var/run/x.sock',
  'unix:/run/nginx.sock:1',
  'unix:x:1',
  '127.0.0.1:22\r\n',
  '127.0.0.1:22\u0000',
  '127.0.0.1:$remote_port',
  '${host}:22',
  'localhost:22 backup',
  'localhost:22 weight=5',
  '[::1]:22;',
  '[::1];:22',
  '[::1]:22}',
  '\u00e9.example:22',
  'b\u00fccher.de:80',
  '\ud83d\ude00:22',
  'xn--bcher-kva.de:x',
  '[1:2:3:4:5:6:7::]:22',
  '[1:2:3:4:5:6:7::]:1',
  '::1:22',
  '[::1]',
  '[::1]:',
  '[::1]:0',
  '[fe80::1%eth0]:22',
  '[fe80::1%25eth0]:22',
  '[::1]]:22',
  '[[::1]:22',
  '[:::1]:22',
  '[::1]:22:33',
  '[1.2.3.4]:22',
  '[::g]:22',
  '[::1] :22',
  '300.1.1.1:22',
  '127.0.0.01:22',
  '127.1:22',
  '0127.0.0.1:22',
  '127.0.0.1.:22',
  '1.2.3.4.5:22',
  '127.0.0.1 :22',
  '127\u30020\u30020\u30021:22',
  '1234:22',
  'mybackend',
  'mybackend:',
  ':22',
  ':',
  '',
  'localhost:0',
  'localhost:65536',
  'localhost:-1',
  'localhost:+22',
  'localhost:022',
  'localhost:22.0',
  'localhost:0x16',
  'localhost:1e1',
  '-localhost:22',
  'localhost-:22',
  'local_host:22',
  'local..host:22',
  '.localhost:22',
  'localhost.:22',
] as const;

/** Backends: valid ones, valid ones with hostile text spliced in, injections, long names. */
export function backendText(range: Range): fc.Arbitrary<string> {
  const splice = fc.tuple(validBackend, hostileText, fc.nat()).map(([backend, text, at]) => {
    const index = at % (backend.length + 1);
    return `${backend.slice(0, index)}${text}${backend.slice(index)}`;
  });
  const label64 = fc.integer({ min: 64, max: 80 }).map((length) => `${'a'.repeat(length)}.example:22`);
  // 254 to 400 characters of 62-character labels: every label is fine, the name is too long.
  const name254 = fc
    .integer({ min: 254, max: 400 })
    .map((length) => `${`${'b'.repeat(62)}.`.repeat(7).slice(0, length - 1)}c:22`);
  // IP literals of every textual form: nginx parses some IPv6 forms differently from node, and
  // that path (nginx -t refuses, the daemon rolls back) needs no DNS.
  const ipLiteral = fc
    .tuple(
      fc.oneof(
        fc.ipV6().map((ip) => `[${ip}]`),
        fc.ipV4(),
        fc.ipV4Extended(),
      ),
      fc.integer({ min: 1, max: 65535 }),
    )
    .map(([host, port]) => `${host}:${port}`);
  return fc.oneof(
    { weight: 3, arbitrary: validBackend },
    { weight: 2, arbitrary: ipLiteral },
    { weight: 4, arbitrary: splice },
    {
      weight: 2,
      arbitrary: fc.tuple(fc.constantFrom(...SAFE_HOSTS), portText(range)).map(([host, port]) => `${host}:${port}`),
    },
    { weight: 3, arbitrary: fc.constantFrom(...INJECTIONS) },
    { weight: 1, arbitrary: label64 },
    { weight: 1, arbitrary: name254 },
    { weight: 1, arbitrary: longText.map((text) => `${text}:22`) },
    { weight: 2, arbitrary: hostileText },
  );
}

/** An Authorization header: mostly the right token, sometimes none, a wrong one or a malformed one. */
export function authHeader(token: string): fc.Arbitrary<string | undefined> {
  return fc.oneof(
    { weight: 12, arbitrary: fc.constant(`Bearer ${token}`) },
    {
      weight: 2,
      arbitrary: fc.constantFrom(
        undefined,
        '',
        'Bearer',
        'Bearer ',
        `Bearer ${token}x`,
        `bearer ${token}`,
        `BEARER   ${token}  `,
        `Bearer\t${token}`,
        `Basic ${Buffer.from(`user:${token}`).toString('base64')}`,
        `Bearer ${token.slice(0, -1)}`,
        `Bearer ${token} ${token}`,
        `Token ${token}`,
        `Bearer "${token}"`,
        'Bearer null',
      ),
    },
  );
}

/**
 * Whether an Authorization header carries the token as the README says it must be sent
 * (`Bearer <token>`, scheme in any case, spaces around): the oracle of the auth checks.
 */
export function bearerIsValid(header: string | undefined, token: string): boolean {
  return /^bearer +(\S+)\s*$/i.exec(header ?? '')?.[1] === token;
}

/** The path part of a request target: no query, no fragment, no absolute-form scheme and host. */
export function targetPath(target: string): string {
  return target.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/]*/i, '').split(/[?#]/)[0] ?? '';
}

// ---------------------------------------------------------------------------------------------
// Input guards
// ---------------------------------------------------------------------------------------------

/** True when `text` passes the daemon's backend validation as a name nginx would resolve by DNS. */
export function queriesDns(text: string): boolean {
  try {
    const backend = parseBackend(text);
    return backend.kind === 'name' && backend.host !== 'localhost';
  } catch {
    return false;
  }
}

function decodeOr(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/**
 * The strings a request path can hand the daemon as parameters: each segment, raw and decoded
 * once (as express decodes route parameters), of the path before any `?` or `#`.
 */
export function pathParameters(path: string): string[] {
  const bare = path.split(/[?#]/)[0] ?? '';
  return bare.split('/').flatMap((segment) => [segment, decodeOr(segment)]);
}

/** Every decoding of `text` we can think of, lower-cased: raw, decoded once, twice, three times. */
function decodings(text: string): string[] {
  const out = [text];
  let current = text;
  for (let i = 0; i < 3; i += 1) {
    current = current.replace(/%([0-9a-f]{2})/gi, (_match, code: string) =>
      String.fromCharCode(Number.parseInt(code, 16)),
    );
    out.push(current);
  }
  return out.map((one) => one.toLowerCase());
}

/** True when a request mentions `tmp` in any spelling: its answer may then echo `/tmp/`. */
export function mentionsTmp(text: string): boolean {
  return decodings(text).some((one) => one.includes('tmp'));
}

/** Listen addresses the generators use: loopback, or forms the daemon must refuse. */
export const SAFE_LISTEN = [
  '127.0.0.1',
  '::1',
  '[::1]',
  '127.0.0.2',
  '0:0:0:0:0:0:0:1',
  'localhost',
  '',
  'x',
  '127.0.0.1;',
  '127.0.0.1 ',
  ' ::1',
  '0.0.0.0.0',
  '127.1',
  'fe80::1%lo',
  '::1%25lo',
  '[::1',
  '::1]',
  '127.0.0.1/8',
] as const;

/**
 * True for a valid IP literal that is not loopback: a stream listening there would be open beyond
 * this machine (0.0.0.0, ::, a public address...). No generated input may ask for one.
 */
export function listensBeyondLoopback(value: unknown): boolean {
  if (typeof value !== 'string') return false;
  const bare = value.startsWith('[') && value.endsWith(']') ? value.slice(1, -1) : value;
  const family = isIP(bare);
  if (family === 4) return !bare.startsWith('127.');
  if (family === 6) {
    try {
      return new URL(`http://[${bare}]/`).hostname !== '[::1]';
    } catch {
      return true;
    }
  }
  return false;
}

/**
 * A JSON text (or anything parsed from one) the properties must not send: it mentions `tmp`, holds
 * anywhere a backend nginx would resolve by DNS, or a `listenAddress` beyond loopback.
 */
export function unsafeJsonText(text: string): boolean {
  if (mentionsTmp(text)) return true;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return false;
  }
  let unsafe = false;
  const walk = (node: unknown): void => {
    if (unsafe) return;
    if (typeof node === 'string') unsafe = queriesDns(node) || queriesDns(node.split(',')[0] ?? '');
    else if (Array.isArray(node)) node.forEach(walk);
    else if (typeof node === 'object' && node !== null) {
      for (const [key, item] of Object.entries(node as Record<string, unknown>)) {
        if (key === 'listenAddress' && listensBeyondLoopback(item)) unsafe = true;
        walk(key);
        walk(item);
      }
    }
  };
  walk(value);
  return unsafe;
}

/** Whether a path is fit for the main properties: no DNS-bound backend, no `tmp`, bounded length. */
export function safePath(path: string): boolean {
  return path.length <= MAX_WIRE_PATH && !mentionsTmp(path) && !pathParameters(path).some(queriesDns);
}

// ---------------------------------------------------------------------------------------------
// The configuration snapshot
// ---------------------------------------------------------------------------------------------

export interface ConfigState {
  /** The stream folder and its subfolders: every file's bytes by relative path (latin1, so any byte compares exactly). */
  files: Record<string, string>;
  /** The store file's bytes; '' when there is none. */
  store: string;
  /** The legacy `/getstreams` answer, status and bytes. */
  getstreams: string;
  /** The ports of the range that have a listening TCP socket or a bound UDP socket (`tcp:9000`, `udp:9000`). */
  listening: string[];
}

const ADDRESS = String.raw`(?:[a-z0-9-]+(?:\.[a-z0-9-]+)*|\[[0-9a-f:.]+\]):[0-9]{1,5}`;

/**
 * The only lines a per-stream file may hold: comments of printable ASCII, and the directives the
 * daemon renders, each with a value of the validated shape (ports, addresses, names of its own).
 */
const ALLOWED_LINES = [
  /^$/,
  /^# [\x20-\x7e]*$/,
  /^server \{$/,
  /^upstream conductor_[0-9]+ \{$/,
  /^\}$/,
  /^ {4}listen (?:[0-9.]+:|\[[0-9a-f:]+\]:)?[0-9]{1,5}(?: udp)?;$/,
  new RegExp(`^ {4}proxy_pass (?:${ADDRESS}|conductor_[0-9]+);$`),
  new RegExp(`^ {4}server ${ADDRESS}(?: weight=[0-9]+)?(?: backup)?;$`),
  /^ {4}(?:least_conn|hash \$remote_addr consistent|deny all|proxy_protocol on);$/,
  /^ {4}allow [0-9a-f.:]+(?:\/[0-9]+)?;$/,
  /^ {4}proxy_(?:connect_)?timeout [0-9]+(?:ms|s|m|h|d)?;$/,
  /^ {4}proxy_buffer_size (?:256k|1m);$/,
  /^ {4}proxy_half_close on;$/,
  /^ {4}access_log \/[A-Za-z0-9_./-]+\/access\.log conductor_v1;$/,
];

/**
 * Every file in the stream folder is one of the daemon's own stream files, and each stream's text
 * holds nothing but its own directives with validated values: no injected syntax, no stray
 * temporary file.
 */
export function expectRenderedSafely(state: ConfigState): void {
  for (const path of Object.keys(state.files))
    expect(basename(path)).toMatch(/^_conductor_(?:[1-9][0-9]{0,4}|streams)\.conf$/);
  for (const [port, { file, text }] of renderedStreams(state.files)) {
    const bad = text.split('\n').filter((line) => !ALLOWED_LINES.some((allowed) => allowed.test(line)));
    expect(
      bad.length === 0
        ? 'ok'
        : `port ${port} in ${file} holds lines the daemon never renders: ${JSON.stringify(bad)}\n${text}`,
    ).toBe('ok');
    const listens = [...text.matchAll(/^ {4}listen (?:\S+:)?([0-9]+)(?: udp)?;$/gm)].map((match) => Number(match[1]));
    expect(listens.length).toBeGreaterThan(0);
    expect(listens.every((listen) => listen === port)).toBe(true);
    expect(text.endsWith('}\n')).toBe(true);
  }
  // A bundle holds its header line and the streams' texts, nothing between them.
  for (const [path, content] of Object.entries(state.files)) {
    if (!path.endsWith('_conductor_streams.conf')) continue;
    const texts = [...renderedStreams({ [path]: content }).values()].map((one) => one.text);
    expect(content).toBe(`${content.split('\n')[0]}\n${texts.join('')}`);
    expect(content.split('\n')[0]).toMatch(/^# Generated by stream-conductor: /);
  }
}

/** The ports of `range` with a listening TCP socket or a bound UDP socket, from the kernel's tables. */
export async function boundPorts(range: Range): Promise<string[]> {
  const found = new Set<string>();
  for (const [file, kind, state] of [
    ['/proc/net/tcp', 'tcp', '0A'],
    ['/proc/net/tcp6', 'tcp', '0A'],
    ['/proc/net/udp', 'udp', '07'],
    ['/proc/net/udp6', 'udp', '07'],
  ] as const) {
    const text = await readFile(file, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      const port = Number.parseInt((fields[1] ?? '').split(':')[1] ?? '', 16);
      if (fields[3] === state && port >= range.start && port <= range.end) found.add(`${kind}:${port}`);
    }
  }
  return [...found].sort();
}

// ---------------------------------------------------------------------------------------------
// The fixture: one daemon with a token and one baseline stream
// ---------------------------------------------------------------------------------------------

export interface StreamListing {
  port: number;
  backend: string;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export { isRecord };

export class Fixture {
  /** The baseline stream as the API lists it (less createdAt), once created. */
  private baselineView: string | undefined;

  private constructor(
    readonly daemon: Daemon,
    readonly token: string,
    /** The stream that exists before every run and is put back after it. */
    readonly baseline: StreamListing,
  ) {}

  /** Starts a daemon with a fresh random token and creates the baseline stream on the last port. */
  static async start(options: DaemonOptions = {}): Promise<Fixture> {
    const token = `fuzz-${randomBytes(16).toString('hex')}`;
    const daemon = await startDaemon({
      rangeSize: 6,
      ...options,
      env: { CONDUCTOR_TOKEN: token, ...(options.env ?? {}) },
    });
    const fixture = new Fixture(daemon, token, { port: daemon.rangeEnd, backend: '127.0.0.1:1' });
    try {
      await fixture.restore();
      // The snapshot sees the daemon's files wherever it keeps them: exactly the baseline stream.
      const state = await fixture.state();
      const streams = [...renderedStreams(state.files)];
      if (
        streams.length !== 1 ||
        streams[0]?.[0] !== fixture.baseline.port ||
        !streams[0][1].text.includes(`proxy_pass ${fixture.baseline.backend};`)
      ) {
        throw new Error(`the stream folder does not hold exactly the baseline stream: ${JSON.stringify(state.files)}`);
      }
      if (!state.store.includes(String(fixture.baseline.port)))
        throw new Error(`the store does not hold the baseline stream: ${JSON.stringify(state.store)}`);
      if (!state.listening.includes(`tcp:${fixture.baseline.port}`))
        throw new Error(`nothing listens on the baseline port: ${JSON.stringify(state.listening)}`);
    } catch (error) {
      await fixture.stop();
      throw error;
    }
    return fixture;
  }

  get range(): Range {
    return { start: this.daemon.rangeStart, end: this.daemon.rangeEnd };
  }

  get authorization(): Record<string, string> {
    return { authorization: `Bearer ${this.token}` };
  }

  send(req: WireRequest, timeoutMs?: number): Promise<RawAnswer> {
    return rawRequest(this.daemon.apiPort, req, timeoutMs);
  }

  /** A request with the right token, for the fixture's own bookkeeping. */
  private async call(method: string, path: string, body?: unknown): Promise<RawAnswer> {
    const headers: Record<string, string> = { ...this.authorization };
    if (body !== undefined) headers['content-type'] = 'application/json';
    return this.send({
      method,
      path,
      headers,
      body: body === undefined ? undefined : Buffer.from(JSON.stringify(body)),
    });
  }

  /** The streams as GET /v1/streams lists them, each with its JSON less `createdAt`. */
  async streams(): Promise<Array<{ port: number; view: string }>> {
    const answer = await this.call('GET', '/v1/streams');
    if (answer.status !== 200 || !isRecord(answer.json) || !Array.isArray(answer.json.streams)) {
      throw new Error(`GET /v1/streams answered ${answer.status}: ${answer.text}`);
    }
    return (answer.json.streams as unknown[]).filter(isRecord).map((stream) => {
      const { createdAt: _createdAt, ...rest } = stream;
      return { port: Number(stream.port), view: JSON.stringify(rest) };
    });
  }

  /** Files, store, legacy listing and listening ports, byte for byte. */
  async state(): Promise<ConfigState> {
    const files: Record<string, string> = {};
    const walk = async (folder: string, prefix: string): Promise<void> => {
      for (const entry of (await readdir(folder, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
        const path = `${prefix}${entry.name}`;
        if (entry.isDirectory()) await walk(join(folder, entry.name), `${path}/`);
        else files[path] = (await readFile(join(folder, entry.name))).toString('latin1');
      }
    };
    await walk(join(this.daemon.home, 'stream.d'), '');
    const store = await readFile(join(this.daemon.home, 'streams.json'))
      .then((bytes) => bytes.toString('latin1'))
      .catch(() => '');
    const listed = await this.call('GET', '/getstreams');
    return { files, store, getstreams: `${listed.status} ${listed.text}`, listening: await boundPorts(this.range) };
  }

  /**
   * Removes every stream but the baseline one and puts the baseline back if it went or was
   * changed (replaced, renewed, relabelled): after it, the daemon lists exactly the baseline.
   */
  async restore(): Promise<void> {
    for (const stream of await this.streams()) {
      if (stream.port === this.baseline.port && (this.baselineView === undefined || stream.view === this.baselineView))
        continue;
      const removed = await this.call('DELETE', `/v1/streams/${stream.port}`);
      // 404: it expired meanwhile (a generated ttl can be a fraction of a second).
      if (removed.status !== 200 && removed.status !== 404)
        throw new Error(`could not remove ${stream.port}: ${removed.status} ${removed.text}`);
    }
    if (!(await this.streams()).some((stream) => stream.port === this.baseline.port)) {
      const created = await this.call('POST', '/v1/streams', this.baseline);
      if (created.status !== 201)
        throw new Error(`could not create the baseline stream: ${created.status} ${created.text}`);
    }
    const now = await this.streams();
    if (now.length !== 1 || now[0]?.port !== this.baseline.port)
      throw new Error(`the daemon lists ${JSON.stringify(now)} after restoring`);
    this.baselineView ??= now[0].view;
    if (now[0].view !== this.baselineView)
      throw new Error(`the baseline stream is ${now[0].view}, not ${this.baselineView}`);
    const listing = await this.call('GET', '/getstreams');
    const expected = `[{"listen": ${this.baseline.port}, "proxy_pass": "${this.baseline.backend}"}]`;
    if (listing.text !== expected) throw new Error(`the listing is ${listing.text} after restoring, not ${expected}`);
  }

  alive(): boolean {
    return this.daemon.child.exitCode === null && this.daemon.child.signalCode === null;
  }

  /** Things no answer may ever carry: the daemon's paths, a stack trace, the token. */
  expectNoLeak(text: string): void {
    const home = this.daemon.home;
    expect(text.includes(home) ? `answer names the daemon's home ${home}: ${text}` : 'ok').toBe('ok');
    expect(text.includes(dirname(home)) ? `answer names the test folder: ${text}` : 'ok').toBe('ok');
    expect(text.includes('/tmp/') ? `answer names /tmp/: ${text}` : 'ok').toBe('ok');
    expect(
      text.includes('    at ') || /^\s*at .*\((?:file|node):/m.test(text)
        ? `answer holds a stack trace: ${text}`
        : 'ok',
    ).toBe('ok');
    expect(text.includes(this.token) ? 'answer holds the API token' : 'ok').toBe('ok');
    expect(
      /\.(?:js|ts):[0-9]+/.test(text) || /node_modules|node:internal/.test(text)
        ? `answer names source files: ${text}`
        : 'ok',
    ).toBe('ok');
  }

  async stop(): Promise<void> {
    await this.daemon.stop();
    await removeDir(dirname(this.daemon.home));
  }
}

/** FUZZ_RUNS_FACTOR, at least 1. */
function runsFactor(): number {
  return Math.max(1, Number(process.env.FUZZ_RUNS_FACTOR ?? 1) || 1);
}

/** A jest timeout for a property, grown with FUZZ_RUNS_FACTOR. */
export function propertyTimeout(ms: number): number {
  return ms * runsFactor();
}

/**
 * fast-check options shared by the files: a fixed seed when FUZZ_SEED is set, more runs when
 * FUZZ_RUNS_FACTOR is (e.g. 10 for a deeper local session; the time guard grows with it), and a
 * time guard that bounds the whole run, shrinking included (a failure found before it is still
 * reported; runs cut off by it count as passed).
 */
export function fcOptions<T>(numRuns: number, examples: T[] = [], timeLimitMs = 35_000): fc.Parameters<T> {
  const seed = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);
  const factor = runsFactor();
  return {
    numRuns: Math.round(numRuns * factor),
    examples,
    ...(seed === undefined ? {} : { seed }),
    plugins: [fc.interruptAfterTimeLimit(timeLimitMs * factor) as unknown as fc.Plugin<T>],
  };
}
