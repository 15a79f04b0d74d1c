/**
 * Which of the kernel's sessions belong to a stream: those on its listen address (its own or the
 * daemon's default), any address for a wildcard. Another nginx on this machine (a second daemon
 * on another loopback address, say) may hold sessions on the same port.
 */
import { describe, expect, it } from '@jest/globals';
import { onAddress } from '../src/sys/sessions.js';

describe('a session on a stream listen address', () => {
  it('counts on every address when the stream listens on all of them', () => {
    for (const listen of [undefined, '0.0.0.0', '::', '[::]', '*', '::0', '0:0:0:0:0:0:0:0'])
      for (const local of ['127.0.0.2:9000', '[::1]:9000', '[::ffff:127.0.0.1]:9000'])
        expect({ listen, local, on: onAddress(local, listen) }).toEqual({ listen, local, on: true });
  });

  it('counts only on its own address when it listens on one', () => {
    expect(onAddress('127.0.0.2:9000', '127.0.0.2')).toBe(true);
    expect(onAddress('127.0.0.3:9000', '127.0.0.2')).toBe(false);
    expect(onAddress('127.0.0.20:9000', '127.0.0.2')).toBe(false);
    expect(onAddress('[::1]:9000', '::1')).toBe(true);
    expect(onAddress('[::1]:9000', '[::1]')).toBe(true);
    expect(onAddress('[::2]:9000', '::1')).toBe(false);
    expect(onAddress('[FE80::1]:9000', 'fe80::1')).toBe(true);
    expect(onAddress('127.0.0.2:9000', '::1')).toBe(false);
    expect(onAddress('garbage', '127.0.0.2')).toBe(false);
  });

  it('matches however either side spells the address', () => {
    expect(onAddress('[fd00::1]:9000', 'fd00:0:0::1')).toBe(true);
    expect(onAddress('[fd00::1]:9000', 'FD00:0000::0001')).toBe(true);
    expect(onAddress('[::ffff:127.0.0.1]:9000', '127.0.0.1')).toBe(true);
    expect(onAddress('127.0.0.1:9000', '::ffff:7f00:1')).toBe(true);
    expect(onAddress('[::ffff:127.0.0.2]:9000', '127.0.0.1')).toBe(false);
    expect(onAddress('[fd00::2]:9000', 'fd00:0:0::1')).toBe(false);
  });
});
