/**
 * The observing modules one at a time, on files and sockets of their own: the access log reader
 * (with rotation), the audit log, the `ss` parser, the TCP probe and the Prometheus rendering.
 * That the figures match real traffic through nginx is proved end to end in
 * tests/e2e/observability.test.ts.
 */

import {
  appendFileSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import type { AuditEvent, StreamView } from '@stream-conductor/shared';
import { silentLogger } from '../src/log.js';
import { AuditLog } from '../src/observe/audit.js';
import { type OpenTraffic, parseSs } from '../src/observe/connections.js';
import { HealthChecker, probe } from '../src/observe/health.js';
import { LogTail } from '../src/observe/log-tail.js';
import { Metrics } from '../src/observe/metrics.js';
import { Observatory } from '../src/observe/observatory.js';
import { parseAccessLine, TrafficCounter } from '../src/observe/traffic.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'sc-observe-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

const line = (
  port: number,
  status: number,
  bytesIn: number,
  bytesOut: number,
  t = '2026-11-25T10:00:00+00:00',
): string =>
  `${JSON.stringify({ t, port, proto: 'TCP', status, in: bytesIn, out: bytesOut, s: 0.1, up: '127.0.0.1:1', client: '127.0.0.1' })}\n`;

describe('the access log reader', () => {
  const tail = (
    path: string,
    counter: TrafficCounter,
    maxBytes = 1 << 20,
    release = async (_rotated: string): Promise<void> => undefined,
    stillWritten = async (_rotated: string): Promise<boolean> => false,
  ): LogTail =>
    new LogTail({
      path,
      onLine: (text) => {
        const parsed = parseAccessLine(text);
        if (parsed) counter.add(parsed);
      },
      rotation: { maxBytes, release, stillWritten },
      log: silentLogger,
    });

  it('counts sessions, bytes, failures and refusals per port, and skips what was there before it started', async () => {
    const path = join(dir, 'access.log');
    writeFileSync(path, line(9000, 200, 1000, 1000));
    const counter = new TrafficCounter();
    const reader = tail(path, counter);
    await reader.poll();
    expect(counter.get(9000).sessions).toBe(0);

    appendFileSync(
      path,
      line(9000, 200, 10, 20, '2026-11-25T10:00:01+00:00') + line(9000, 502, 0, 0, '2026-11-25T10:00:03+00:00'),
    );
    appendFileSync(path, line(9000, 403, 0, 0, '2026-11-25T11:00:02+01:00') + line(9001, 200, 5, 7));
    appendFileSync(path, line(9000, 503, 0, 0, '2026-11-25T10:00:02+00:00'));
    await reader.poll();
    expect(counter.get(9000)).toEqual({
      sessions: 4,
      failedSessions: 1,
      deniedSessions: 1,
      limitedSessions: 1,
      bytesIn: 10,
      bytesOut: 20,
      lastSessionAt: '2026-11-25T10:00:03.000Z',
    });
    expect(counter.get(9001)).toMatchObject({ sessions: 1, bytesIn: 5, bytesOut: 7 });
    expect(counter.get(9002)).toEqual({
      sessions: 0,
      failedSessions: 0,
      deniedSessions: 0,
      limitedSessions: 0,
      bytesIn: 0,
      bytesOut: 0,
    });
  });

  it('waits for the end of a line cut in the middle, and ignores lines that are not its format', async () => {
    const path = join(dir, 'access.log');
    writeFileSync(path, '');
    const counter = new TrafficCounter();
    const reader = tail(path, counter);
    await reader.poll();
    const whole = line(9000, 200, 123, 456);
    appendFileSync(path, `not json\n{"port":"x"}\n${whole.slice(0, 20)}`);
    await reader.poll();
    expect(counter.get(9000).sessions).toBe(0);
    appendFileSync(path, whole.slice(20));
    await reader.poll();
    expect(counter.get(9000)).toMatchObject({ sessions: 1, bytesIn: 123, bytesOut: 456 });
  });

  it('rotates a log past its size, has nginx let go of it, reads the rotated file to its end and removes it', async () => {
    const path = join(dir, 'access.log');
    writeFileSync(path, '');
    const counter = new TrafficCounter();
    const released: string[] = [];
    // Like nginx: until it lets go, it keeps writing to the renamed file.
    let writeTo = path;
    const reader = tail(path, counter, 2000, async (rotated) => {
      released.push(rotated);
      writeTo = path;
    });
    await reader.poll();
    let sent = 0;
    const look = 5 * line(9000, 200, 100, 1).length;
    for (let round = 0; round < 40; round += 1) {
      for (let i = 0; i < 5; i += 1) {
        appendFileSync(writeTo, line(9000, 200, 100, 1));
        sent += 1;
      }
      if (existsSync(`${path}.1`) && round % 7 === 3) {
        // a late line into the rotated file, as an old worker ending a session writes it
        appendFileSync(`${path}.1`, line(9000, 200, 100, 1));
        sent += 1;
      }
      await reader.poll();
      // Bounded: the live file by the limit and what one look found.
      expect(existsSync(path) ? statSync(path).size : 0).toBeLessThanOrEqual(2000 + look);
    }
    for (let i = 0; i < 6; i += 1) await reader.poll();
    expect(released.length).toBeGreaterThan(2);
    expect(counter.get(9000)).toMatchObject({ sessions: sent, bytesIn: sent * 100 });
    for (const rotated of new Set(released)) expect(existsSync(rotated)).toBe(false);
  });

  it('keeps reading a rotated file while nginx still holds it open, under another name than the next rotation', async () => {
    const path = join(dir, 'access.log');
    writeFileSync(path, '');
    const counter = new TrafficCounter();
    const held = new Set<string>();
    const reader = tail(
      path,
      counter,
      500,
      async (rotated) => void held.add(rotated),
      async (rotated) => held.has(rotated),
    );
    await reader.poll();
    appendFileSync(path, line(9000, 200, 1, 1).repeat(5));
    await reader.poll();
    expect(existsSync(`${path}.1`)).toBe(true);
    for (let i = 0; i < 20; i += 1) await reader.poll();
    // still held: kept, and a line written to it much later is counted
    expect(existsSync(`${path}.1`)).toBe(true);
    appendFileSync(`${path}.1`, line(9000, 200, 1000, 1));
    appendFileSync(path, line(9000, 200, 1, 1).repeat(5));
    await reader.poll();
    expect(existsSync(`${path}.2`)).toBe(true);
    expect(counter.get(9000)).toMatchObject({ sessions: 11, bytesIn: 1010 });
    held.clear();
    for (let i = 0; i < 14; i += 1) await reader.poll();
    expect(existsSync(`${path}.1`)).toBe(false);
    expect(existsSync(`${path}.2`)).toBe(false);
  });

  it('removes rotated files an earlier run left, unless nginx still writes them', async () => {
    const path = join(dir, 'access.log');
    writeFileSync(`${path}.1`, line(9000, 200, 1, 1));
    writeFileSync(`${path}.2`, line(9000, 200, 1, 1));
    const reader = tail(path, new TrafficCounter(), 1 << 20, undefined, async (rotated) => rotated.endsWith('.2'));
    await reader.poll();
    expect(existsSync(`${path}.1`)).toBe(false);
    expect(existsSync(`${path}.2`)).toBe(true);
  });

  it('starts over when someone else truncates or replaces the file', async () => {
    const path = join(dir, 'access.log');
    writeFileSync(path, line(9000, 200, 1, 1).repeat(3));
    const counter = new TrafficCounter();
    const reader = tail(path, counter);
    await reader.poll();
    renameSync(path, join(dir, 'elsewhere'));
    writeFileSync(path, line(9000, 200, 50, 60));
    await reader.poll();
    expect(counter.get(9000)).toMatchObject({ sessions: 1, bytesIn: 50, bytesOut: 60 });
  });

  it("counts each route's sessions of a port that routes by server name, not those refused before the hello", () => {
    const counter = new TrafficCounter();
    const routed = (status: number, route: string, bytesIn: number, t = '2026-11-25T10:00:00+00:00'): void => {
      const parsed = parseAccessLine(
        JSON.stringify({
          t,
          port: 443,
          proto: 'TCP',
          status,
          in: bytesIn,
          out: 2 * bytesIn,
          s: 0.1,
          up: '',
          client: '',
          route,
        }),
      );
      if (!parsed) throw new Error('not a line');
      counter.add(parsed);
    };
    routed(200, 'git.example.com', 10, '2026-11-25T10:00:05+00:00');
    routed(200, 'git.example.com', 20, '2026-11-25T10:00:01+00:00');
    routed(502, '*.db.example.com', 0);
    routed(200, '@no-tls', 5);
    routed(403, '@no-tls', 0); // the allow-list: before the hello is read
    routed(503, '@no-tls', 0); // a limit: likewise
    routed(502, '', 0); // no route took it
    expect(counter.route(443, 'git.example.com')).toEqual({
      route: 'git.example.com',
      sessions: 2,
      failedSessions: 0,
      bytesIn: 30,
      bytesOut: 60,
      lastSessionAt: '2026-11-25T10:00:05.000Z',
    });
    expect(counter.route(443, '*.db.example.com')).toMatchObject({ sessions: 1, failedSessions: 1 });
    expect(counter.route(443, '@no-tls')).toMatchObject({ sessions: 1, bytesIn: 5 });
    expect(counter.route(443, '@default')).toEqual({
      route: '@default',
      sessions: 0,
      failedSessions: 0,
      bytesIn: 0,
      bytesOut: 0,
    });
    expect(counter.get(443)).toMatchObject({ sessions: 7, failedSessions: 2, deniedSessions: 1, limitedSessions: 1 });
    counter.reset(443);
    expect(counter.route(443, 'git.example.com').sessions).toBe(0);
  });

  it('forgets a port when a new stream is made on it', () => {
    const counter = new TrafficCounter();
    counter.add({ t: '', port: 9000, status: 200, in: 5, out: 5 });
    counter.reset(9000);
    expect(counter.get(9000).sessions).toBe(0);
  });
});

describe('the audit log', () => {
  const event = (at: string, ports: number[], result: 'ok' | 'refused' = 'ok'): AuditEvent => ({
    at,
    actor: 'alice',
    remote: '127.0.0.1',
    action: 'create',
    ports,
    result,
  });

  it('appends JSON lines, answers queries by port, time and count, and keeps the latest across restarts', () => {
    const path = join(dir, 'audit.log');
    const audit = new AuditLog(path, { maxBytes: 1 << 20, keep: 1000, log: silentLogger });
    audit.record(event('2026-11-25T10:00:00.000Z', [9000]));
    audit.record(event('2026-11-25T10:00:01.000Z', [9001], 'refused'));
    audit.record(event('2026-11-25T10:00:02.000Z', [9000, 9001]));
    const lines = readFileSync(path, 'utf8')
      .trim()
      .split('\n')
      .map((text) => JSON.parse(text) as AuditEvent);
    expect(lines.map((entry) => entry.at)).toEqual([
      '2026-11-25T10:00:00.000Z',
      '2026-11-25T10:00:01.000Z',
      '2026-11-25T10:00:02.000Z',
    ]);
    expect(statSync(path).mode & 0o777).toBe(0o600);

    expect(audit.query({ port: 9000 }).map((entry) => entry.at)).toEqual([
      '2026-11-25T10:00:00.000Z',
      '2026-11-25T10:00:02.000Z',
    ]);
    expect(audit.query({ since: '2026-11-25T10:00:00.000Z' })).toHaveLength(2);
    // A time past the last event, also one past the year 9999 (which sorts first as text): none.
    expect(audit.query({ since: '2026-11-25T10:00:02.000Z' })).toEqual([]);
    expect(audit.query({ since: new Date(Date.parse('20000')).toISOString() })).toEqual([]);
    expect(audit.query({ limit: 1 })[0]?.at).toBe('2026-11-25T10:00:02.000Z');

    const again = new AuditLog(path, { maxBytes: 1 << 20, keep: 2, log: silentLogger });
    expect(again.query().map((entry) => entry.at)).toEqual(['2026-11-25T10:00:01.000Z', '2026-11-25T10:00:02.000Z']);
  });

  it('rotates to audit.log.1 past its size, so that it stays bounded', () => {
    const path = join(dir, 'audit.log');
    const audit = new AuditLog(path, { maxBytes: 1000, keep: 10, log: silentLogger });
    for (let i = 0; i < 100; i += 1)
      audit.record(event(new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(), [9000 + i]));
    expect(statSync(path).size).toBeLessThanOrEqual(1000);
    expect(statSync(`${path}.1`).size).toBeLessThanOrEqual(1000);
    expect(audit.query({ limit: 1000 })).toHaveLength(10);
  });

  it('never writes or reads through a symbolic link put in its place', () => {
    const elsewhere = join(dir, 'elsewhere');
    const planted = `${JSON.stringify(event('2026-11-25T09:00:00.000Z', [9999]))}\n`;
    writeFileSync(elsewhere, planted);
    const path = join(dir, 'audit.log');
    symlinkSync(elsewhere, path);
    const errors: string[] = [];
    const log = { ...silentLogger, error: (message: string) => errors.push(message) };
    const audit = new AuditLog(path, { maxBytes: 1 << 20, keep: 10, log });
    expect(audit.query()).toEqual([]);
    audit.record(event('2026-11-25T10:00:00.000Z', [9000]));
    expect(readFileSync(elsewhere, 'utf8')).toBe(planted);
    expect(errors).toEqual(['could not write the audit log']);
    expect(audit.query()).toHaveLength(1);
  });

  it('keeps answering when the file cannot be written', () => {
    const audit = new AuditLog(join(dir, 'no-such-folder', 'audit.log'), {
      maxBytes: 1000,
      keep: 10,
      log: silentLogger,
    });
    audit.record(event('2026-11-25T10:00:00.000Z', [9000]));
    expect(audit.query()).toHaveLength(1);
  });
});

describe('open connections from ss', () => {
  it('counts established sockets per local port with the bytes their TCP info reports', () => {
    const text = [
      '0      0      127.0.0.1:9000     127.0.0.1:51234',
      '\t cubic wscale:7,7 rto:204 rtt:0.05/0.025 mss:32768 bytes_sent:1200 bytes_acked:1201 bytes_received:5000 segs_out:3',
      '0      0      [::1]:9000     [::1]:40000',
      '\t cubic bytes_acked:11 bytes_received:22',
      '0      0      127.0.0.1:51234     127.0.0.1:9000',
      '\t cubic bytes_acked:5000 bytes_received:1200',
      '0      0      127.0.0.1:22     10.0.0.1:40000',
      '\t cubic bytes_acked:999 bytes_received:999',
    ].join('\n');
    const result = parseSs(text, new Set([9000, 9001]));
    expect(result.get(9000)).toEqual({ active: 2, bytesIn: 5022, bytesOut: 1212 });
    expect(result.has(9001)).toBe(false);
    expect(result.has(22)).toBe(false);
  });
});

describe('backend probes', () => {
  let server: Server;
  let port: number;
  beforeEach(async () => {
    server = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });
  afterEach(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('measures a connect that works and reports one that is refused', async () => {
    expect(await probe(`127.0.0.1:${port}`, 2000)).toBeGreaterThan(0);
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await expect(probe(`127.0.0.1:${port}`, 2000)).rejects.toThrow('ECONNREFUSED');
    server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  });

  it('keeps one state per backend, leaves UDP backends unknown and probes one stream on demand', async () => {
    const targets = [
      { port: 9000, protocol: 'tcp' as const, backends: [`127.0.0.1:${port}`, '127.0.0.1:1'] },
      { port: 9001, protocol: 'udp' as const, backends: ['127.0.0.1:53'] },
    ];
    const checker = new HealthChecker(() => targets, { intervalMs: 0, timeoutMs: 2000 });
    expect(checker.of(targets[0]!).map((health) => health.state)).toEqual(['unknown', 'unknown']);
    await checker.check(9000);
    const [up, down] = checker.of(targets[0]!);
    expect(up).toMatchObject({ backend: `127.0.0.1:${port}`, state: 'up' });
    expect(up?.latencyMs).toBeGreaterThanOrEqual(0);
    expect(down).toMatchObject({ backend: '127.0.0.1:1', state: 'down', error: 'ECONNREFUSED' });
    expect(checker.of(targets[1]!)).toEqual([{ backend: '127.0.0.1:53', state: 'unknown' }]);
  });

  it('runs one probe of a stream at a time however often it is asked, and forgets backends no stream names', async () => {
    let accepted = 0;
    server.on('connection', () => {
      accepted += 1;
    });
    const targets = [{ port: 9000, protocol: 'tcp' as const, backends: [`127.0.0.1:${port}`, '127.0.0.1:1'] }];
    const checker = new HealthChecker(() => targets, { intervalMs: 0, timeoutMs: 2000 });
    await Promise.all(Array.from({ length: 20 }, () => checker.check(9000)));
    expect(accepted).toBe(1);
    expect(checker.known).toBe(2);
    targets[0] = { port: 9000, protocol: 'tcp' as const, backends: [`127.0.0.1:${port}`] };
    await checker.check();
    expect(checker.known).toBe(1);
    expect(accepted).toBe(2);
  });

  it('probes the new backends of a stream replaced while a probe of its old ones runs', async () => {
    const old = { port: 9000, protocol: 'tcp' as const, backends: ['127.0.0.1:1'] };
    const replaced = { port: 9000, protocol: 'tcp' as const, backends: [`127.0.0.1:${port}`] };
    let targets = [old];
    const checker = new HealthChecker(() => targets, { intervalMs: 0, timeoutMs: 2000 });
    const first = checker.check(9000);
    targets = [replaced];
    await Promise.all([first, checker.check(9000)]);
    expect(checker.of(replaced)).toEqual([expect.objectContaining({ state: 'up' })]);
  });

  it('keeps the health of a backend that a stream created during a full round named', async () => {
    // A long round: many backends, one probe at a time.
    const many = Array.from({ length: 200 }, (_, i) => `127.0.0.1:${i + 1}`);
    const added = { port: 9001, protocol: 'tcp' as const, backends: [`127.0.0.1:${port}`] };
    let calls = 0;
    const checker = new HealthChecker(
      () => {
        calls += 1;
        return calls === 1
          ? [{ port: 9000, protocol: 'tcp' as const, backends: many }]
          : [{ port: 9000, protocol: 'tcp' as const, backends: many }, added];
      },
      { intervalMs: 0, timeoutMs: 2000, concurrency: 1 },
    );
    const round = checker.check();
    await checker.check(9001);
    await round;
    expect(checker.of(added)).toEqual([expect.objectContaining({ state: 'up' })]);
  });
});

describe('the stats of a list', () => {
  const until = async (done: () => boolean): Promise<void> => {
    for (let i = 0; i < 200 && !done(); i += 1) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(done()).toBe(true);
  };
  const stream = (port: number): StreamView =>
    ({
      port,
      protocol: 'tcp',
      state: 'live',
      backends: [{ address: '127.0.0.1:22' }],
      createdAt: '2026-11-25T10:00:00.000Z',
    }) as unknown as StreamView; // the fields the stats read
  const observatory = (readSockets: (ports: Set<number>) => Promise<Map<number, OpenTraffic>>): Observatory =>
    new Observatory({
      accessLogs: [],
      accessLogMaxBytes: 1 << 20,
      errorLogs: [],
      auditPath: join(dir, 'audit.log'),
      auditMaxBytes: 1 << 20,
      healthIntervalMs: 0,
      healthTimeoutMs: 1000,
      log: silentLogger,
      readSockets,
    });

  it('asks the kernel once at a time, and the asks that come meanwhile share the next read', async () => {
    const reads: number[][] = [];
    let running = 0;
    let most = 0;
    const release: Array<() => void> = [];
    const watched = observatory(async (ports) => {
      reads.push([...ports].sort((a, b) => a - b));
      running += 1;
      most = Math.max(most, running);
      await new Promise<void>((resolve) => release.push(resolve));
      running -= 1;
      return new Map();
    });
    const first = watched.withStats([stream(9000)]);
    await until(() => reads.length === 1);
    const more = [
      watched.withStats([stream(9001)]),
      watched.withStats([stream(9002)]),
      watched.withStats([stream(9001), stream(9003)]),
    ];
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(reads).toHaveLength(1);
    release.shift()?.();
    await first;
    await until(() => reads.length === 2);
    release.shift()?.();
    await Promise.all(more);
    expect(reads).toEqual([[9000], [9001, 9002, 9003]]);
    expect(most).toBe(1);
  });

  it('counts a session that ends just after the kernel was asked once, not twice', async () => {
    const watched: Observatory = observatory(async () => {
      const open = new Map([[9000, { active: 1, bytesIn: 100, bytesOut: 50 }]]);
      // The session ends, and its line is read from the access log, right after ss saw it open.
      watched.traffic.add({ t: new Date().toISOString(), port: 9000, status: 200, in: 100, out: 50 });
      return open;
    });
    const [during] = await watched.withStats([stream(9000)]);
    expect(during?.stats).toMatchObject({ sessions: 0, activeConnections: 1, bytesIn: 100, bytesOut: 50 });
  });
});

describe('Prometheus metrics', () => {
  it('renders the stats of the current scrape, not of the one before', async () => {
    let sessions = 1;
    const stream = (): StreamView =>
      ({
        port: 9000,
        protocol: 'tcp',
        state: 'live',
        backends: [{ address: '127.0.0.1:22' }],
        stats: {
          sessions,
          failedSessions: 0,
          deniedSessions: 0,
          bytesIn: sessions * 100,
          bytesOut: 7,
          activeConnections: 2,
          backends: [{ backend: '127.0.0.1:22', state: 'up', latencyMs: 1.5 }],
        },
      }) as unknown as StreamView; // only the fields the metrics read
    const metrics = new Metrics({
      streams: async () => [stream()],
      nginx: () => [{ id: 0, state: 'running', restarts: 2, drainingWorkers: 1 }],
    });
    metrics.apply(0, 0.02, 3, 1);
    metrics.reload(0, true, 0.01);
    let text = await metrics.render();
    expect(text).toContain('conductor_stream_sessions_total{port="9000"} 1');
    sessions = 5;
    text = await metrics.render();
    expect(text).toContain('conductor_stream_sessions_total{port="9000"} 5');
    expect(text).toContain('conductor_stream_received_bytes_total{port="9000"} 500');
    expect(text).toContain('conductor_stream_sent_bytes_total{port="9000"} 7');
    expect(text).toContain('conductor_stream_active_connections{port="9000"} 2');
    expect(text).toContain('conductor_stream_up{port="9000",protocol="tcp"} 1');
    expect(text).toContain('conductor_backend_up{port="9000",backend="127.0.0.1:22"} 1');
    expect(text).toContain('conductor_backend_connect_seconds{port="9000",backend="127.0.0.1:22"} 0.0015');
    expect(text).toContain('conductor_nginx_restarts_total{instance="0"} 2');
    expect(text).toContain('conductor_nginx_draining_workers{instance="0"} 1');
    expect(text).toContain('conductor_changes_total{instance="0",result="applied"} 3');
    expect(text).toContain('conductor_changes_total{instance="0",result="refused"} 1');
    expect(text).toContain('conductor_nginx_reloads_total{instance="0",result="ok"} 1');
    expect(text).toContain('conductor_apply_duration_seconds_count{instance="0"} 1');
  });
});
