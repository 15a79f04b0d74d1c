import { describe, expect, it } from '@jest/globals';
import { ConductorError, ErrorCode, parseStreamInput, sameSpec, sameTraffic } from '../src/index.js';

function refusal(fn: () => unknown): ConductorError {
  try {
    fn();
  } catch (error) {
    if (error instanceof ConductorError) return error;
    throw error;
  }
  throw new Error('expected a refusal, got none');
}

const parse = (fields: Record<string, unknown>, backend = 'db.internal:5432') =>
  parseStreamInput({ port: 9000, backend, ...fields }, { now: new Date() });

describe('TLS fields of a stream', () => {
  it('takes a certificate and key, and backend TLS verified against a CA by default', () => {
    expect(parse({ tlsCert: '/etc/tls/cert.pem', tlsKey: '/etc/tls/key.pem' })).toMatchObject({
      tlsCert: '/etc/tls/cert.pem',
      tlsKey: '/etc/tls/key.pem',
    });
    const backend = parse({ backendTls: true, backendCa: '/etc/tls/ca.pem' });
    expect(backend).toMatchObject({ backendTls: true, backendCa: '/etc/tls/ca.pem' });
    expect(backend).not.toHaveProperty('backendVerify');
    expect(parse({ backendTls: true, backendVerify: false }, '127.0.0.1:5432')).toMatchObject({
      backendVerify: false,
    });
    expect(parse({ backendTls: true, backendCa: '/ca.pem', backendName: 'DB.Internal' }, '127.0.0.1:1')).toMatchObject({
      backendName: 'db.internal',
    });
    expect(parse({ backendTls: false })).not.toHaveProperty('backendTls');
  });

  it.each<[Record<string, unknown>, RegExp, string]>([
    [
      { tlsCert: 'cert.pem', tlsKey: '/k.pem' },
      /^tlsCert: must be an absolute path, got "cert\.pem"$/,
      'db.internal:5432',
    ],
    [{ tlsCert: '/c.pem', tlsKey: './k.pem' }, /^tlsKey: must be an absolute path/, 'db.internal:5432'],
    [{ tlsCert: '/etc/../c.pem', tlsKey: '/k.pem' }, /^tlsCert: must be a plain absolute path/, 'db.internal:5432'],
    [{ tlsCert: '/c.pem\n', tlsKey: '/k.pem' }, /^tlsCert: must be a plain absolute path/, 'db.internal:5432'],
    [
      { tlsCert: 42, tlsKey: '/k.pem' },
      /^tlsCert: must be the absolute path of a PEM file, got 42$/,
      'db.internal:5432',
    ],
    [{ tlsCert: '/c.pem' }, /^tlsKey: is required with tlsCert/, 'db.internal:5432'],
    [{ tlsKey: '/k.pem' }, /^tlsCert: is required with tlsKey/, 'db.internal:5432'],
    [{ backendTls: 'yes' }, /^backendTls: must be true or false, got "yes"$/, 'db.internal:5432'],
    [{ backendCa: '/ca.pem' }, /^backendCa: needs backendTls: true/, 'db.internal:5432'],
    [{ backendName: 'db' }, /^backendName: needs backendTls: true/, 'db.internal:5432'],
    [{ backendVerify: false }, /^backendVerify: needs backendTls: true/, 'db.internal:5432'],
    [{ backendTls: true }, /^backendCa: is required to verify/, 'db.internal:5432'],
    [
      { backendTls: true, backendVerify: false, backendCa: '/ca.pem' },
      /^backendCa: is not used with backendVerify: false$/,
      'db.internal:5432',
    ],
    [
      { backendTls: true, backendCa: '/ca.pem', backendName: 'a b' },
      /^backendName: must be a host name/,
      'db.internal:5432',
    ],
    [
      { backendTls: true, backendCa: '/ca.pem', backendName: 'a;b' },
      /^backendName: must be a host name/,
      'db.internal:5432',
    ],
    [
      { backendTls: true, backendCa: '/ca.pem' },
      /^backendName: is required for a backend given by address \(10\.0\.0\.1\)/,
      '10.0.0.1:443',
    ],
    [
      { backendTls: true, backendCa: '/ca.pem' },
      /^backendName: is required for a backend given by address \(::1\)/,
      '[::1]:443',
    ],
    [
      { protocol: 'udp', tlsCert: '/c.pem', tlsKey: '/k.pem' },
      /^tlsCert: TLS is for TCP streams only, not udp$/,
      'db.internal:5432',
    ],
    [
      { protocol: 'tcp+udp', backendTls: true, backendVerify: false },
      /^backendTls: TLS is for TCP streams only, not tcp\+udp$/,
      'db.internal:5432',
    ],
  ])('refuses %j, naming the field', (fields, message, backend) => {
    const error = refusal(() => parse(fields, backend));
    expect(error.code).toBe(ErrorCode.InvalidInput);
    expect(error.message).toMatch(message);
  });

  it('needs a name when the backends have different hosts', () => {
    const error = refusal(() =>
      parseStreamInput(
        { port: 9000, backends: ['a.internal:1', 'b.internal:1'], backendTls: true, backendCa: '/ca.pem' },
        { now: new Date() },
      ),
    );
    expect(error.message).toMatch(/^backendName: is required when the backends have different hosts/);
  });

  it('counts the files and their checked copies as part of the traffic', () => {
    const base = parse({ tlsCert: '/c.pem', tlsKey: '/k.pem' });
    expect(sameSpec(base, parse({ tlsCert: '/c.pem', tlsKey: '/k.pem' }))).toBe(true);
    expect(sameTraffic(base, parse({ tlsCert: '/c2.pem', tlsKey: '/k.pem' }))).toBe(false);
    const copied = { ...base, tlsMaterial: { id: 'a', certificates: [] } };
    expect(sameTraffic(copied, { ...base, tlsMaterial: { id: 'b', certificates: [] } })).toBe(false);
    expect(sameTraffic(copied, { ...base, tlsMaterial: { id: 'a', certificates: [] } })).toBe(true);
  });

  it.each([
    ['\u0085', 'U+0085'],
    ['\u009b', 'U+009B'],
    ['\u061c', 'U+061C'],
    ['\u200b', 'U+200B'],
    ['\u200e', 'U+200E'],
    ['\u200f', 'U+200F'],
    ['\u202a', 'U+202A'],
    ['\u202e', 'U+202E'],
    ['\u2066', 'U+2066'],
    ['\u2069', 'U+2069'],
    ['\ufeff', 'U+FEFF'],
    ['\u0007', 'U+0007'],
  ])('refuses %j in a TLS path, naming the field and the character, printable', (char, named) => {
    for (const field of ['tlsCert', 'tlsKey', 'backendCa'] as const) {
      const fields: Record<string, unknown> =
        field === 'backendCa'
          ? { backendTls: true, backendCa: `/etc/tls/a${char}b.pem` }
          : { tlsCert: '/etc/tls/cert.pem', tlsKey: '/etc/tls/key.pem', [field]: `/etc/tls/a${char}b.pem` };
      const error = refusal(() => parse(fields));
      expect(error.code).toBe(ErrorCode.InvalidInput);
      expect(error.message).toContain(`${field}: must be a plain absolute path: ${named}`);
      // The path is shown, the character in it escaped unless it shows as nothing.
      expect(error.message).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/);
    }
  });

  it('does not take tlsMaterial from a client', () => {
    expect(refusal(() => parse({ tlsMaterial: { id: 'x', certificates: [] } })).message).toMatch(/tlsMaterial/);
  });
});
