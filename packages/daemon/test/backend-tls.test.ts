/**
 * Failed TLS handshakes with backends, read from nginx's error log: the line parser on lines
 * captured from nginx 1.22.1 (stream module, error_log at warn, and info for the edge's own
 * handshakes), and the per-port counts with the latest failure while it is news. End to end with
 * real backends in tests/e2e/stream-tls-backend-failures.test.ts.
 */
import { describe, expect, it } from '@jest/globals';
import { BackendTlsWatch, parseBackendTlsLine } from '../src/observe/backend-tls.js';
import type { AccessLine } from '../src/observe/traffic.js';

/** nginx writes local time: what 2026/12/06 HH:MM:SS is in UTC here. */
const local = (time: string): string => {
  const [h, m, s] = time.split(':').map(Number) as [number, number, number];
  return new Date(2026, 11, 6, h, m, s).toISOString();
};

const CAPTURED = {
  otherCa:
    '2026/12/06 03:16:49 [error] 24000#24000: *3 upstream SSL certificate verify error: (21:unable to verify the first certificate) while SSL handshaking to upstream, client: 127.0.0.1, server: 0.0.0.0:47102, upstream: "127.0.0.1:47202", bytes from/to client:0/0, bytes from/to upstream:0/0',
  otherName:
    '2026/12/06 03:16:52 [error] 24000#24000: *5 upstream SSL certificate does not match "127.0.0.1" while SSL handshaking to upstream, client: 127.0.0.1, server: 127.0.0.1:47103, upstream: "127.0.0.1:47203", bytes from/to client:0/0, bytes from/to upstream:0/0',
  expired:
    '2026/12/06 03:16:55 [error] 24000#24000: *7 upstream SSL certificate verify error: (10:certificate has expired) while SSL handshaking to upstream, client: 127.0.0.1, server: 127.0.0.1:47104, upstream: "127.0.0.1:47204", bytes from/to client:0/0, bytes from/to upstream:0/0',
  notTls:
    '2026/12/06 03:16:58 [error] 24000#24000: *9 SSL_do_handshake() failed (SSL: error:0A00010B:SSL routines::wrong version number) while SSL handshaking to upstream, client: 127.0.0.1, server: 127.0.0.1:47105, upstream: "127.0.0.1:47205", bytes from/to client:0/0, bytes from/to upstream:0/0',
  closed:
    '2026/12/06 03:17:01 [error] 24000#24000: *11 peer closed connection in SSL handshake (104: Connection reset by peer) while SSL handshaking to upstream, client: 127.0.0.1, server: 127.0.0.1:47106, upstream: "127.0.0.1:47206", bytes from/to client:0/0, bytes from/to upstream:0/0',
  ipv6: '2026/12/06 03:17:14 [error] 24000#24000: *21 upstream SSL certificate verify error: (10:certificate has expired) while SSL handshaking to upstream, client: ::1, server: [::1]:47104, upstream: "127.0.0.1:47204", bytes from/to client:0/0, bytes from/to upstream:0/0',
  untrusted20:
    '2026/12/06 04:01:02 [error] 812#812: *40 upstream SSL certificate verify error: (20:unable to get local issuer certificate) while SSL handshaking to upstream, client: 127.0.0.1, server: 127.0.0.1:47101, upstream: "[::1]:47201", bytes from/to client:0/0, bytes from/to upstream:0/0',
};

/** Lines of the same logs that are not a failed handshake with a backend. */
const OTHERS = [
  // nginx's follow-up when a backend of an upstream group fails: the failure itself is the line before
  '2026/12/06 03:17:04 [warn] 24000#24000: *13 upstream server temporarily disabled while SSL handshaking to upstream, client: 127.0.0.1, server: 127.0.0.1:47107, upstream: "127.0.0.1:47202", bytes from/to client:0/0, bytes from/to upstream:0/0',
  // no backend listening: not TLS
  '2026/12/06 03:17:11 [error] 24000#24000: *19 connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: 127.0.0.1:47108, upstream: "127.0.0.1:47207", bytes from/to client:0/0, bytes from/to upstream:0/0',
  // the edge's own handshake with a client (TLS termination), at info
  '2026/12/06 03:20:43 [info] 30263#30263: *1 SSL_do_handshake() failed (SSL: error:0A00009C:SSL routines::http request) while SSL handshaking, client: 127.0.0.1, server: 127.0.0.1:47111',
  '2026/12/06 03:20:43 [info] 30263#30263: *1 client 127.0.0.1:35268 connected to 127.0.0.1:47111',
  '2026/12/06 03:16:45 [emerg] 23997#23997: bind() to 127.0.0.2:47102 failed (98: Address already in use)',
  '2026/12/06 03:20:20 [notice] 28689#28689: signal 17 (SIGCHLD) received from 28691',
  '2026/12/06 03:20:20 [notice] 29718#29718: signal process started',
  '',
  'upstream SSL certificate verify error: (20:unable to get local issuer certificate) while SSL handshaking to upstream',
];

describe('the error log line parser', () => {
  it('reads a backend whose certificate another CA signed', () => {
    expect(parseBackendTlsLine(CAPTURED.otherCa)).toEqual({
      at: local('03:16:49'),
      reason: 'untrusted',
      message: 'certificate verify error 21: unable to verify the first certificate',
      backend: '127.0.0.1:47202',
      client: '127.0.0.1',
      port: 47102,
    });
    expect(parseBackendTlsLine(CAPTURED.untrusted20)).toMatchObject({
      reason: 'untrusted',
      message: 'certificate verify error 20: unable to get local issuer certificate',
      backend: '[::1]:47201',
      port: 47101,
    });
  });

  it('reads a backend whose certificate names another host', () => {
    expect(parseBackendTlsLine(CAPTURED.otherName)).toEqual({
      at: local('03:16:52'),
      reason: 'name-mismatch',
      message: 'certificate does not match "127.0.0.1"',
      backend: '127.0.0.1:47203',
      client: '127.0.0.1',
      port: 47103,
    });
  });

  it('reads expired certificates and handshakes that failed before any certificate, with nginx words', () => {
    expect(parseBackendTlsLine(CAPTURED.expired)).toMatchObject({
      reason: 'expired',
      message: 'certificate verify error 10: certificate has expired',
      port: 47104,
    });
    expect(parseBackendTlsLine(CAPTURED.notTls)).toMatchObject({
      reason: 'handshake',
      message: 'SSL_do_handshake() failed (SSL: error:0A00010B:SSL routines::wrong version number)',
      backend: '127.0.0.1:47205',
      port: 47105,
    });
    expect(parseBackendTlsLine(CAPTURED.closed)).toMatchObject({
      reason: 'handshake',
      message: 'peer closed connection in SSL handshake (104: Connection reset by peer)',
      port: 47106,
    });
  });

  it('takes the port of an IPv6 listen address, and an IPv6 client', () => {
    expect(parseBackendTlsLine(CAPTURED.ipv6)).toMatchObject({ port: 47104, client: '::1', reason: 'expired' });
  });

  it('leaves every other line alone', () => {
    for (const line of OTHERS) expect(parseBackendTlsLine(line)).toBeUndefined();
  });

  it('gives an unknown verification error its code, under verify-other', () => {
    const line = CAPTURED.otherCa.replace(
      '(21:unable to verify the first certificate)',
      '(26:unsupported certificate purpose)',
    );
    expect(parseBackendTlsLine(line)).toMatchObject({
      reason: 'verify-other',
      message: 'certificate verify error 26: unsupported certificate purpose',
    });
  });
});

const failure = (line: string) => {
  const parsed = parseBackendTlsLine(line);
  if (!parsed) throw new Error(`not a failure: ${line}`);
  return parsed;
};

const session = (port: number, up: string, t: string, s: number, status = 200): AccessLine => ({
  t,
  port,
  status,
  in: 1,
  out: 1,
  s,
  up,
});

describe('the failures of a stream', () => {
  // Read a second after nginx's stamp: the failure is known to be before the end of its second.
  const readLate = (): BackendTlsWatch => new BackendTlsWatch(() => Date.parse(local('03:16:55')) + 5000);
  const created = '2026-01-01T00:00:00.000Z';

  it('counts per port and reason, keeps the latest, and stays out of other streams', () => {
    const watch = readLate();
    watch.failed(failure(CAPTURED.otherCa));
    watch.failed(failure(CAPTURED.otherCa));
    watch.failed(failure(CAPTURED.otherName));
    expect(watch.of([47102], created)).toEqual({
      count: 2,
      reasons: { untrusted: 2 },
      last: {
        at: local('03:16:49'),
        reason: 'untrusted',
        message: 'certificate verify error 21: unable to verify the first certificate',
        backend: '127.0.0.1:47202',
        client: '127.0.0.1',
      },
    });
    expect(watch.of([47103], created)).toMatchObject({ count: 1, reasons: { 'name-mismatch': 1 } });
    expect(watch.of([47101], created)).toBeUndefined();
    // a range: summed over its ports, the latest of them
    expect(watch.of([47101, 47102, 47103], created)).toMatchObject({
      count: 3,
      reasons: { untrusted: 2, 'name-mismatch': 1 },
      last: { backend: '127.0.0.1:47203' },
    });
  });

  it('drops the latest once the stream changed after it, and keeps the counts', () => {
    const watch = readLate();
    watch.failed(failure(CAPTURED.otherCa));
    expect(watch.of([47102], local('03:16:49'))?.last).toBeDefined(); // same second: may be after the change
    const after = new Date(Date.parse(local('03:16:50')) + 1).toISOString();
    expect(watch.of([47102], after)).toEqual({ count: 1, reasons: { untrusted: 1 } });
  });

  it('knows a failure is older than a change the daemon saw after reading it', () => {
    const readAt = Date.parse(local('03:16:49')) + 300;
    const watch = new BackendTlsWatch(() => readAt);
    watch.failed(failure(CAPTURED.otherCa));
    expect(watch.of([47102], new Date(readAt - 1).toISOString())?.last).toBeDefined();
    expect(watch.of([47102], new Date(readAt + 1).toISOString())?.last).toBeUndefined();
  });

  it('drops the latest once a session went through that backend after it, not another one', () => {
    const watch = readLate();
    watch.failed(failure(CAPTURED.otherCa));
    const laterLocal = new Date(Date.parse(local('03:17:30'))).toISOString();
    // through another backend, a failed session, a session that began before the failure
    watch.sessionEnded(session(47102, '127.0.0.1:47209', laterLocal, 0.1));
    watch.sessionEnded(session(47102, '127.0.0.1:47202', laterLocal, 0.1, 502));
    watch.sessionEnded(session(47102, '127.0.0.1:47202', laterLocal, 120));
    watch.sessionEnded(session(47103, '127.0.0.1:47202', laterLocal, 0.1));
    expect(watch.of([47102], created)?.last).toBeDefined();
    // tried the failing one first, then served by another: still failing
    watch.sessionEnded(session(47102, '127.0.0.1:47202, 127.0.0.1:47209', laterLocal, 0.1));
    expect(watch.of([47102], created)?.last).toBeDefined();
    watch.sessionEnded(session(47102, '127.0.0.1:47209, 127.0.0.1:47202', laterLocal, 0.1));
    expect(watch.of([47102], created)).toEqual({ count: 1, reasons: { untrusted: 1 } });
    // a new failure is news again
    watch.failed(failure(CAPTURED.otherCa));
    expect(watch.of([47102], created)).toMatchObject({ count: 2, last: { reason: 'untrusted' } });
  });

  it('forgets a port when a new stream is made on it', () => {
    const watch = readLate();
    watch.failed(failure(CAPTURED.otherCa));
    watch.reset(47102);
    expect(watch.of([47102], created)).toBeUndefined();
  });
});
