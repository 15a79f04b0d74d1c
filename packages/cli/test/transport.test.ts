import { describe, expect, it } from '@jest/globals';
import { ConductorError } from '@stream-conductor/shared';
import { isLoopbackHost, transportFor } from '../src/transport.js';
import { insecureFromEnv, transportSettings } from '../src/transport-options.js';

const TOKEN = 'abcdefghijklmnop';
const files: Record<string, string> = { '/ca.pem': 'CA', '/client.pem': 'CERT', '/client.key': 'KEY' };
const read = (file: string): Buffer => {
  const text = files[file];
  if (text === undefined) throw Object.assign(new Error('no such file'), { code: 'ENOENT' });
  return Buffer.from(text);
};

function usageOf(make: () => unknown): string {
  try {
    make();
  } catch (error) {
    expect(error).toBeInstanceOf(ConductorError);
    expect((error as ConductorError).code).toBe('USAGE');
    return (error as ConductorError).message;
  }
  throw new Error('no error');
}

describe('isLoopbackHost', () => {
  it.each(['127.0.0.1', '127.3.2.1', 'localhost', 'LOCALHOST', '[::1]', '::1'])('%s is loopback', (host) => {
    expect(isLoopbackHost(host)).toBe(true);
  });
  it.each(['192.0.2.1', '10.0.0.1', '[2001:db8::1]', '[::ffff:7f00:1]', 'edge1', '128.0.0.1', '0.0.0.0'])(
    '%s is not',
    (host) => {
      expect(isLoopbackHost(host)).toBe(false);
    },
  );
  it('takes hosts as the URL parser writes them', () => {
    expect(isLoopbackHost(new URL('http://[0:0:0:0:0:0:0:1]:5000').hostname)).toBe(true);
    expect(isLoopbackHost(new URL('http://2130706433:5000').hostname)).toBe(true);
  });
});

describe('transportFor', () => {
  it('plain HTTP to loopback: no TLS, nothing to say', () => {
    expect(transportFor({ url: 'http://127.0.0.1:5000', token: TOKEN }, read)).toEqual({
      tls: undefined,
      warnings: [],
    });
  });

  it('refuses to send a token in clear text to a non-loopback address', () => {
    expect(usageOf(() => transportFor({ url: 'http://192.0.2.1:5000', token: TOKEN }, read))).toBe(
      'refusing to send the API token in clear text to http://192.0.2.1:5000: it is not a loopback address',
    );
  });

  it('without a token, plain HTTP anywhere is allowed (nothing secret goes)', () => {
    expect(transportFor({ url: 'http://192.0.2.1:5000' }, read).tls).toBeUndefined();
  });

  it('--insecure lets the token go in clear text, and says so', () => {
    const transport = transportFor({ url: 'http://192.0.2.1:5000', token: TOKEN, insecure: true }, read);
    expect(transport.tls).toBeUndefined();
    expect(transport.warnings).toEqual(['--insecure: the API token goes to http://192.0.2.1:5000 in clear text']);
  });

  it('https: verifies with the system CAs, or the CA given; a client certificate for mutual TLS', () => {
    expect(transportFor({ url: 'https://192.0.2.1:5000', token: TOKEN }, read)).toEqual({
      tls: { rejectUnauthorized: true },
      warnings: [],
    });
    expect(
      transportFor(
        { url: 'https://127.0.0.1:5000', caFile: '/ca.pem', certFile: '/client.pem', keyFile: '/client.key' },
        read,
      ).tls,
    ).toEqual({ rejectUnauthorized: true, ca: Buffer.from('CA'), cert: Buffer.from('CERT'), key: Buffer.from('KEY') });
  });

  it('https with --insecure: no verification, said on stderr', () => {
    const transport = transportFor({ url: 'https://127.0.0.1:5000', insecure: true }, read);
    expect(transport.tls).toEqual({ rejectUnauthorized: false });
    expect(transport.warnings[0]).toMatch(
      /^--insecure: the certificate of https:\/\/127\.0\.0\.1:5000 is not verified/,
    );
  });

  it.each<[string, Parameters<typeof transportFor>[0], string]>([
    [
      'a certificate without its key',
      { url: 'https://127.0.0.1:5000', certFile: '/client.pem' },
      'a client certificate needs both --cert and --key (CONDUCTOR_CLIENT_CERT, CONDUCTOR_CLIENT_KEY)',
    ],
    [
      'a key without its certificate',
      { url: 'https://127.0.0.1:5000', keyFile: '/client.key' },
      'a client certificate needs both --cert and --key (CONDUCTOR_CLIENT_CERT, CONDUCTOR_CLIENT_KEY)',
    ],
    [
      'a CA for plain HTTP',
      { url: 'http://127.0.0.1:5000', caFile: '/ca.pem' },
      '--ca, --cert and --key are for https:// URLs; http://127.0.0.1:5000 is plain HTTP and verifies nothing',
    ],
    [
      'a CA file that cannot be read',
      { url: 'https://127.0.0.1:5000', caFile: '/missing.pem' },
      'cannot read the CA certificate /missing.pem (ENOENT)',
    ],
    [
      'a client key that cannot be read',
      { url: 'https://127.0.0.1:5000', certFile: '/client.pem', keyFile: '/nope.key' },
      'cannot read the client key /nope.key (ENOENT)',
    ],
  ])('refuses %s', (_what, input, message) => {
    expect(usageOf(() => transportFor(input, read))).toBe(message);
  });
});

describe('CONDUCTOR_INSECURE', () => {
  it.each([
    ['1', true],
    ['true', true],
    ['YES', true],
    ['on', true],
    ['0', false],
    ['false', false],
    ['No', false],
    ['off', false],
    ['', false],
    [undefined, false],
  ])('%j is %s', (value, expected) => {
    expect(insecureFromEnv(value)).toBe(expected);
  });

  it.each(['2', 'maybe', 'truee', ' 1'])('refuses %j', (value) => {
    expect(usageOf(() => insecureFromEnv(value))).toBe(
      `CONDUCTOR_INSECURE must be 1, true, yes, on or 0, false, no, off, got ${JSON.stringify(value)}`,
    );
  });

  it('the flag wins over the variable', () => {
    expect(transportSettings({ insecure: true }, { CONDUCTOR_INSECURE: '0' }).insecure).toBe(true);
    expect(transportSettings({}, { CONDUCTOR_INSECURE: 'yes' }).insecure).toBe(true);
    expect(transportSettings({ ca: '' }, {}).caFile).toBeUndefined();
  });
});
