import { readFile } from 'node:fs/promises';
import { type AddressInfo, createServer, type Server } from 'node:net';
import { afterEach, describe, expect, it } from '@jest/globals';
import { type ListeningSocket, parseProcNetTcp, probeTcpPort } from '../src/sys/ports.js';
import { canonicalAddress, socketInodesOf } from '../src/sys/sockets.js';

const TCP_HEADER =
  '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     ';
const TCP6_HEADER =
  '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode';

/** One /proc/net/tcp{,6} row as the kernel prints it; `local` and `remote` are `HEXADDR:HEXPORT`. */
const row = (slot: number, local: string, remote: string, state: string): string =>
  `${String(slot).padStart(4)}: ${local} ${remote} ${state} 00000000:00000000 00:00000000 00000000     0        0 ${55143 + slot} 1 0000000000000000 100 0 0 10 0                     `;

describe('parseProcNetTcp, IPv4', () => {
  // The address is one 32-bit word in host (little-endian) order: 127.0.0.1 is 0100007F.
  it.each<[string, string, ListeningSocket]>([
    ['loopback', '0100007F:2328', { address: '127.0.0.1', port: 9000, inode: 55143 }],
    ['wildcard', '00000000:0016', { address: '0.0.0.0', port: 22, inode: 55143 }],
    ['private', '0500000A:1388', { address: '10.0.0.5', port: 5000, inode: 55143 }],
    ['high octets', '1401A8C0:01BB', { address: '192.168.1.20', port: 443, inode: 55143 }],
    ['broadcast and the last port', 'FFFFFFFF:FFFF', { address: '255.255.255.255', port: 65535, inode: 55143 }],
    ['lowercase hex', '0102a8c0:00ff', { address: '192.168.2.1', port: 255, inode: 55143 }],
  ])('decodes a listening socket: %s', (_what, local, expected) => {
    const text = [TCP_HEADER, row(0, local, '00000000:0000', '0A'), ''].join('\n');
    expect(parseProcNetTcp(text, 4)).toEqual([expected]);
  });

  it.each<[string, string]>([
    ['01', 'ESTABLISHED'],
    ['02', 'SYN_SENT'],
    ['06', 'TIME_WAIT'],
    ['07', 'CLOSE'],
    ['08', 'CLOSE_WAIT'],
    ['0B', 'CLOSING'],
  ])('ignores state %s (%s)', (state) => {
    const text = [TCP_HEADER, row(0, '0100007F:2328', '0100007F:C350', state), ''].join('\n');
    expect(parseProcNetTcp(text, 4)).toEqual([]);
  });

  it('keeps only the listening rows of a realistic table, in order', () => {
    const text = [
      TCP_HEADER,
      row(0, '0100007F:1388', '00000000:0000', '0A'),
      row(1, '00000000:2328', '00000000:0000', '0A'),
      row(2, '0100007F:2328', '0100007F:D431', '01'),
      row(3, '0100007F:D431', '0100007F:2328', '01'),
      row(4, '0100007F:9C40', '0100007F:1F90', '06'),
      row(5, '0500000A:0016', '00000000:0000', '0A'),
      row(6, '0500000A:0016', '3200000A:E6F2', '01'),
      '',
    ].join('\n');
    expect(parseProcNetTcp(text, 4)).toEqual([
      { address: '127.0.0.1', port: 5000, inode: 55143 },
      { address: '0.0.0.0', port: 9000, inode: 55144 },
      { address: '10.0.0.5', port: 22, inode: 55148 },
    ]);
  });

  it.each<[string, string]>([
    ['empty text', ''],
    ['header only', TCP_HEADER],
    ['header and newline', `${TCP_HEADER}\n`],
    ['a listening row without its header is taken for the header', row(0, '0100007F:2328', '00000000:0000', '0A')],
    ['a short row', `${TCP_HEADER}\n   0: 0100007F:2328 00000000:0000\n`],
    ['an address without a port', `${TCP_HEADER}\n   0: 0100007F 00000000:0000 0A 0\n`],
  ])('finds nothing in %s', (_what, text) => {
    expect(parseProcNetTcp(text, 4)).toEqual([]);
  });
});

describe('parseProcNetTcp, IPv6', () => {
  // The address is four 32-bit words, each in host (little-endian) order: ::1 is 00000000 00000000 00000000 01000000.
  it.each<[string, string, string]>([
    ['wildcard', '00000000000000000000000000000000', '::'],
    ['loopback', '00000000000000000000000001000000', '::1'],
    ['documentation prefix', 'B80D0120000000000000000001000000', '2001:db8::1'],
    ['link-local', '000080FE000000000000000002000100', 'fe80::1:2'],
    ['no zero group', 'B80D0120020001000400030006000500', '2001:db8:1:2:3:4:5:6'],
    ['a single zero group is not compressed', 'B80D0120010000000100010001000100', '2001:db8:0:1:1:1:1:1'],
    ['the longest zero run is compressed', '00000100020000000000000003000000', '1:0:0:2::3'],
    ['the first of two equal runs is compressed', 'B80D0120000000000000010001000000', '2001:db8::1:0:0:1'],
    ['a trailing zero run', '00000100000000000000000000000000', '1::'],
    ['hex letters and a lone trailing zero', '000080FE00000000000000000000CDAB', 'fe80::abcd:0'],
    ['leading zeros of a group dropped', '0000000000000000000000001000FF00', '::ff:10'],
  ])('decodes a listening socket: %s', (_what, hex, address) => {
    const text = [TCP6_HEADER, row(0, `${hex}:2328`, '00000000000000000000000000000000:0000', '0A'), ''].join('\n');
    const sockets = parseProcNetTcp(text, 6);
    expect(sockets).toHaveLength(1);
    // The kernel prints upper-case hex; compare the address whatever its case.
    expect(sockets.map((socket) => ({ address: socket.address.toLowerCase(), port: socket.port }))).toEqual([
      { address, port: 9000 },
    ]);
  });

  it('keeps only the listening rows of a realistic table', () => {
    const zero = '00000000000000000000000000000000:0000';
    const text = [
      TCP6_HEADER,
      row(0, '00000000000000000000000001000000:1388', zero, '0A'),
      row(1, '00000000000000000000000000000000:0050', zero, '0A'),
      row(2, '00000000000000000000000001000000:1388', '00000000000000000000000001000000:B2C4', '01'),
      row(3, '00000000000000000000000001000000:B2C4', '00000000000000000000000001000000:1388', '08'),
      '',
    ].join('\n');
    expect(parseProcNetTcp(text, 6)).toEqual([
      { address: '::1', port: 5000, inode: 55143 },
      { address: '::', port: 80, inode: 55144 },
    ]);
  });
});

describe('parseProcNetTcp on this host', () => {
  let server: Server | undefined;
  afterEach(async () => {
    await new Promise<void>((done) => (server ? server.close(() => done()) : done()));
    server = undefined;
  });

  it('lists a socket this test listens on', async () => {
    server = createServer();
    const held = server;
    await new Promise<void>((done) => held.listen(0, '127.0.0.1', done));
    const { port } = held.address() as AddressInfo;
    const sockets = parseProcNetTcp(await readFile('/proc/net/tcp', 'utf8'), 4);
    expect(sockets).toContainEqual({ address: '127.0.0.1', port, inode: expect.any(Number) });
    // The inode is the one this process holds open.
    const mine = sockets.find((socket) => socket.address === '127.0.0.1' && socket.port === port);
    expect(socketInodesOf(process.pid)).toContain(mine?.inode);
  });
});

describe('probeTcpPort', () => {
  const servers: Server[] = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((server) => new Promise<void>((done) => server.close(() => done()))));
  });

  const hold = async (host: string): Promise<number> => {
    const server = createServer();
    servers.push(server);
    await new Promise<void>((done) => server.listen(0, host, done));
    return (server.address() as AddressInfo).port;
  };

  /** A port that was free a moment ago: bound to port 0, then released. */
  const releasedPort = async (): Promise<number> => {
    const server = createServer();
    await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
    const { port } = server.address() as AddressInfo;
    await new Promise<void>((done) => server.close(() => done()));
    return port;
  };

  it("answers 'in-use' for a port a server holds on 127.0.0.1", async () => {
    const port = await hold('127.0.0.1');
    expect(await probeTcpPort(port, '127.0.0.1')).toBe('in-use');
  });

  it("answers 'in-use' on the IPv4 wildcard for a port held on 127.0.0.1", async () => {
    const port = await hold('127.0.0.1');
    expect(await probeTcpPort(port, undefined)).toBe('in-use');
  });

  it("answers 'in-use' on 127.0.0.1 for a port held on the IPv4 wildcard", async () => {
    const port = await hold('0.0.0.0');
    expect(await probeTcpPort(port, '127.0.0.1')).toBe('in-use');
  });

  it("answers 'free' for a free port on 127.0.0.1, and leaves it free", async () => {
    const port = await releasedPort();
    expect(await probeTcpPort(port, '127.0.0.1')).toBe('free');
    // The probe closed its socket: the port can be probed (and bound) again.
    expect(await probeTcpPort(port, '127.0.0.1')).toBe('free');
  });

  it('tells a port that was held from the same port once released', async () => {
    const server = createServer();
    await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
    const { port } = server.address() as AddressInfo;
    expect(await probeTcpPort(port, '127.0.0.1')).toBe('in-use');
    await new Promise<void>((done) => server.close(() => done()));
    expect(await probeTcpPort(port, '127.0.0.1')).toBe('free');
  });

  it('says unavailable for an address the host does not have', async () => {
    await expect(probeTcpPort(await releasedPort(), '192.0.2.123')).resolves.toBe('unavailable');
  });
});

describe('canonicalAddress', () => {
  it.each<[string, string]>([
    ['127.0.0.1', '127.0.0.1'],
    ['::', '::'],
    ['::1', '::1'],
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['fe80:0000::0001:0002', 'fe80::1:2'],
    ['1:0:0:2:0:0:0:3', '1:0:0:2::3'],
  ])('%s is written %s, as /proc/net shows it', (address, expected) => {
    expect(canonicalAddress(address)).toBe(expected);
  });
});
