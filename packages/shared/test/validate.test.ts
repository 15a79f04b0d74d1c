import { describe, expect, it } from '@jest/globals';
import {
  assertPortInRange,
  ConductorError,
  ErrorCode,
  formatRate,
  isIPv4,
  isTokenText,
  parseBackend,
  parsePort,
  parsePortRange,
  parseRate,
  parseStreamInput,
  printable,
  quote,
  sameSpec,
  sameTraffic,
  shown,
} from '../src/index.js';

function refusal(fn: () => unknown): ConductorError {
  try {
    fn();
  } catch (error) {
    if (error instanceof ConductorError) return error;
    throw error;
  }
  throw new Error('expected a refusal, got none');
}

describe('parsePort', () => {
  it.each([
    ['1', 1],
    ['22', 22],
    ['9000', 9000],
    ['65535', 65535],
    [443, 443],
  ])('accepts %p', (input, expected) => {
    expect(parsePort(input)).toBe(expected);
  });

  it.each([
    '0',
    '65536',
    '99999',
    '-1',
    '+80',
    '080',
    '9000.0',
    '1e3',
    ' 80',
    '80 ',
    '0x50',
    '',
    'abc',
    '８０',
    '80;',
    '9000\n',
  ])('refuses %p', (input) => {
    const error = refusal(() => parsePort(input));
    expect(error.code).toBe(ErrorCode.InvalidInput);
    expect(error.message).toMatch(/port must be a whole number from 1 to 65535/);
  });

  it('names the value it refused, escaped', () => {
    expect(refusal(() => parsePort('1\n2')).message).toContain('"1\\n2"');
  });
});

describe('parsePortRange', () => {
  it('reads an inclusive range', () => {
    expect(parsePortRange('9000-9009')).toEqual({ start: 9000, end: 9009 });
    expect(parsePortRange('9000-9000')).toEqual({ start: 9000, end: 9000 });
  });

  it.each(['9000', '9009-9000', '0-10', '9000-70000', '9000 - 9009', 'a-b', '', '9000-9009-9010'])(
    'refuses %p',
    (input) => {
      expect(refusal(() => parsePortRange(input)).code).toBe(ErrorCode.InvalidInput);
    },
  );

  it('refuses a port outside the range with its own code', () => {
    const range = parsePortRange('9000-9009');
    expect(() => assertPortInRange(9009, range)).not.toThrow();
    const error = refusal(() => assertPortInRange(9010, range));
    expect(error.code).toBe(ErrorCode.PortOutOfRange);
    expect(error.message).toBe("port 9010 is outside the daemon's port range 9000-9009");
  });
});

describe('parseBackend', () => {
  it.each([
    ['mybackend:22', 'mybackend:22', 'name'],
    ['MyBackend.Example.COM:443', 'mybackend.example.com:443', 'name'],
    ['a-b.c-d:1', 'a-b.c-d:1', 'name'],
    ['localhost:65535', 'localhost:65535', 'name'],
    ['10.1.0.1:2000', '10.1.0.1:2000', 'ipv4'],
    ['127.0.0.1:22', '127.0.0.1:22', 'ipv4'],
    ['[::1]:22', '[::1]:22', 'ipv6'],
    ['[2001:DB8::1]:443', '[2001:db8::1]:443', 'ipv6'],
    ['[::ffff:10.0.0.1]:80', '[::ffff:a00:1]:80', 'ipv6'],
    ['[1:2:3:4:5:6:7::]:22', '[1:2:3:4:5:6:7:0]:22', 'ipv6'],
    [`${'a'.repeat(63)}.example:1`, `${'a'.repeat(63)}.example:1`, 'name'],
  ])('accepts %p', (input, address, kind) => {
    const backend = parseBackend(input);
    expect(backend.address).toBe(address);
    expect(backend.kind).toBe(kind);
  });

  it.each([
    ['', /empty/],
    ['mybackend', /has no port/],
    ['mybackend:', /backend port must be/],
    ['mybackend:0', /backend port must be/],
    ['mybackend:65536', /backend port must be/],
    ['mybackend:22;', /backend port must be/],
    ['a:1;proxy_timeout 1s', /backend port must be/],
    ['a;b:1', /label/],
    ['a{b:1', /label/],
    ['a}b:1', /label/],
    ['a#b:1', /label/],
    ['$host:1', /label/],
    ['"a":1', /label/],
    ["'a':1", /label/],
    ['a\\b:1', /label/],
    ['a b:1', /label/],
    ['a\nb:1', /label/],
    ['a\tb:1', /label/],
    ['mybackend:22\n', /backend port must be/],
    ['include /etc/passwd:1', /label/],
    ['unix:/var/run/x.sock', /backend port must be|not host:port/],
    ['unix:/tmp/a:1', /not host:port/],
    ['under_score:22', /label/],
    ['-leading:22', /label/],
    ['trailing-:22', /label/],
    ['a..b:22', /empty label/],
    ['.a:22', /empty label/],
    ['a.:22', /empty label/],
    [`${'a'.repeat(64)}:1`, /label of 64 characters/],
    [`${'abcdefghi.'.repeat(26)}com:1`, /characters long/],
    ['x'.repeat(300), /characters long/],
    ['bücher.de:80', /label/],
    ['1.2.3:80', /not a valid IPv4/],
    ['256.1.1.1:80', /not a valid IPv4/],
    ['010.0.0.1:80', /not a valid IPv4/],
    ['1234:80', /not a valid IPv4/],
    ['host.123:80', /last label is numeric/],
    ['::1:22', /must be in brackets/],
    ['[::1]', /not \[ipv6\]:port/],
    ['[::1]:', /backend port must be/],
    ['[fe80::1%eth0]:22', /not an IPv6 address/],
    ['[::g]:22', /not an IPv6 address/],
    ['[10.0.0.1]:22', /not an IPv6 address/],
    ['[::1]:22:33', /not \[ipv6\]:port/],
    ['%2e%2e/etc:1', /label/],
    ['../../etc/passwd:1', /label|empty label/],
  ])('refuses %p', (input, reason) => {
    const error = refusal(() => parseBackend(input));
    expect(error.code).toBe(ErrorCode.InvalidInput);
    expect(error.message).toMatch(reason);
  });

  it('never lets a character nginx treats specially through', () => {
    const special = [';', '{', '}', '#', '$', '"', "'", '\\', ' ', '\n', '\r', '\t', '/', '\0'];
    for (const char of special) {
      for (const input of [`a${char}b:1`, `ab:1${char}`, `${char}ab:1`, `[::1${char}]:1`]) {
        expect(() => parseBackend(input)).toThrow(ConductorError);
      }
    }
  });
});

describe('helpers', () => {
  it('isIPv4 is strict', () => {
    expect(isIPv4('192.168.0.1')).toBe(true);
    expect(isIPv4('0.0.0.0')).toBe(true);
    expect(isIPv4('192.168.0.01')).toBe(false);
    expect(isIPv4('192.168.0')).toBe(false);
  });

  it('quote escapes control characters and cuts long input', () => {
    expect(quote('a\u0007b')).toBe('"a\\u0007b"');
    expect(quote('x'.repeat(200))).toBe(`"${'x'.repeat(80)}..."`);
    // What JSON leaves raw but a terminal acts on: DEL, C1 (CSI), separators, bidi overrides.
    expect(quote('a\u007fb\u009b31mc\u2028d\u202ee')).toBe('"a\\u007fb\\u009b31mc\\u2028d\\u202ee"');
  });

  it('printable escapes every control character and keeps the rest as it is', () => {
    expect(printable('ok\n2026-01-01 alice remove\u001b[31m\u009bx\u2066')).toBe(
      'ok\\u000a2026-01-01 alice remove\\u001b[31m\\u009bx\\u2066',
    );
    expect(printable('café → ü "quoted"')).toBe('café → ü "quoted"');
    expect(printable('y'.repeat(20), 8)).toBe(`${'y'.repeat(8)}...`);
  });
});

describe('values nested thousands of levels deep', () => {
  const deepList = (depth: number): unknown => {
    let value: unknown = 'x';
    for (let i = 0; i < depth; i += 1) value = [value];
    return value;
  };

  it('are shown as "a list" or "an object", never converted', () => {
    expect(shown(deepList(100_000))).toBe('a list');
    expect(shown({ a: 1 })).toBe('an object');
    expect(shown(null)).toBe('null');
    expect(shown(18151)).toBe('18151');
    expect(shown('a"b')).toBe('"a\\"b"');
    expect(quote(deepList(100_000))).toBe('"a list"');
  });

  it.each(['protocol', 'balance', 'profile', 'allow'])('in %s are refused with a message naming the field', (field) => {
    const error = refusal(() =>
      parseStreamInput(
        { port: 9000, backend: 'a:1', [field]: field === 'allow' ? [deepList(5000)] : deepList(5000) },
        { now: new Date() },
      ),
    );
    expect(error.code).toBe(ErrorCode.InvalidInput);
    expect(error.message).toMatch(new RegExp(`^${field}(\\[0\\])?: .*got a list$`));
  });
});

describe('isTokenText', () => {
  it.each(['abcdefghijklmnop', 'A!~{}[]"\'\\#$%&*+,-./:;<=>?@^_`|'])('takes %j', (token) => {
    expect(isTokenText(token)).toBe(true);
  });

  it.each(['', 'with space', 'tab\there', 'line\nbreak', 'caf\u00e9', '\u007f'])('refuses %j', (token) => {
    expect(isTokenText(token)).toBe(false);
  });
});

describe('session limits', () => {
  const parse = (fields: Record<string, unknown>) =>
    parseStreamInput({ port: 9000, backend: 'a:1', ...fields }, { now: new Date() });

  it('takes counts and rates as numbers or text, rates with k, m or g as nginx reads sizes', () => {
    expect(
      parse({ maxConnections: 100, maxConnectionsPerClient: '4', uploadRate: '512k', downloadRate: '10M' }),
    ).toMatchObject({ maxConnections: 100, maxConnectionsPerClient: 4, uploadRate: 524_288, downloadRate: 10_485_760 });
    expect(parse({ uploadRate: 1000, downloadRate: '1g' })).toMatchObject({
      uploadRate: 1000,
      downloadRate: 1024 ** 3,
    });
    expect(parse({})).not.toHaveProperty('maxConnections');
    expect(parse({ maxConnections: 65_535 }).maxConnections).toBe(65_535); // nginx's largest
    expect(parseRate('10g', 'r')).toBe(10 * 1024 ** 3);
  });

  it.each<[Record<string, unknown>, RegExp]>([
    [{ maxConnections: 0 }, /^maxConnections: must be a whole number of sessions from 1 to 65535, got 0$/],
    [{ maxConnections: -3 }, /^maxConnections: .*got -3$/],
    [{ maxConnections: 2.5 }, /^maxConnections: .*got 2\.5$/],
    [{ maxConnections: '07' }, /^maxConnections: .*got "07"$/],
    [{ maxConnections: '1e3' }, /^maxConnections: .*got "1e3"$/],
    [{ maxConnections: 65_536 }, /^maxConnections: .*from 1 to 65535, got 65536$/],
    [{ maxConnections: true }, /^maxConnections: .*got true$/],
    [{ maxConnectionsPerClient: 'four' }, /^maxConnectionsPerClient: .*got "four"$/],
    [
      { maxConnections: 2, maxConnectionsPerClient: 5 },
      /^maxConnectionsPerClient: 5 is more than maxConnections \(2\), which would always stop it first$/,
    ],
    [{ uploadRate: 0 }, /^uploadRate: must be bytes per second such as 512k, 10m or 1g, got 0$/],
    [{ uploadRate: '10 m' }, /^uploadRate: .*got "10 m"$/],
    [{ uploadRate: '1.5m' }, /^uploadRate: .*got "1.5m"$/],
    [{ uploadRate: '10t' }, /^uploadRate: .*got "10t"$/],
    [{ uploadRate: '1m; deny all' }, /^uploadRate: /],
    [{ downloadRate: '11g' }, /^downloadRate: must be at most 10g \(10 GiB per second\), got "11g"$/],
    [{ downloadRate: 0.5 }, /^downloadRate: .*got 0\.5$/],
    [{ downloadRate: [] }, /^downloadRate: .*got a list$/],
  ])('refuses %j, naming the field and the value', (fields, message) => {
    const error = refusal(() => parse(fields));
    expect(error.code).toBe(ErrorCode.InvalidInput);
    expect(error.message).toMatch(message);
  });

  it('writes rates for people in exact units', () => {
    expect([formatRate(10 * 1024 ** 2), formatRate(512 * 1024), formatRate(1000), formatRate(3 * 1024 ** 3)]).toEqual([
      '10 MiB/s',
      '512 KiB/s',
      '1000 B/s',
      '3 GiB/s',
    ]);
  });

  it('counts as part of the stream: a changed limit is a change to the traffic', () => {
    const base = parse({ maxConnections: 10 });
    expect(sameSpec(base, parse({ maxConnections: 10 }))).toBe(true);
    expect(sameSpec(base, parse({ maxConnections: 11 }))).toBe(false);
    expect(sameTraffic(base, parse({ maxConnections: 10, downloadRate: '1m' }))).toBe(false);
  });
});
