/**
 * The API's own connections against clients without a token: half-sent requests are cut off
 * within the headers timeout and their sockets (file descriptors) released, even when the client
 * never closes its side; requests with the token are served meanwhile.
 */

import { readdir, readFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { Daemon } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { eventually } from '../helpers/wait.js';

const TOKEN = 'connections-test-token-0123456789';
const auth = { authorization: `Bearer ${TOKEN}` };
/** The daemon's headers timeout (server.ts), and the interval node checks it on. */
const HEADERS_TIMEOUT_MS = 5000;

let daemon: Daemon;
let pid: number;

const daemons = daemonFixture();

beforeAll(async () => {
  daemon = await daemons.start({ env: { CONDUCTOR_TOKEN: TOKEN } });
  pid = daemon.child.pid ?? 0;
  // The test reads the daemon's own file descriptors: make sure this pid is the daemon.
  expect(await readFile(`/proc/${pid}/cmdline`, 'utf8')).toContain('conductor-daemon');
});

afterAll(async () => {});

const openFds = async (): Promise<number> => (await readdir(`/proc/${pid}/fd`)).length;

interface Outcome {
  answer: string;
  /** Milliseconds from connecting to the server closing its side. */
  endedAfterMs: number;
}

/**
 * Connects, sends `data` and never closes its own side (allowHalfOpen, no end()): only the
 * server can release the connection. Resolves when the server has closed its side.
 */
function halfSent(data: string, sockets: Socket[], connected: () => void): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = connect({ port: daemon.apiPort, host: '127.0.0.1', allowHalfOpen: true });
    sockets.push(socket);
    let answer = '';
    socket.on('connect', () => {
      if (data !== '') socket.write(data);
      connected();
    });
    socket.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
    socket.on('end', () => resolve({ answer, endedAfterMs: Date.now() - started }));
    socket.on('error', reject);
  });
}

describe('the API against clients without a token', () => {
  it('cuts off hundreds of half-sent requests within the headers timeout, frees their sockets, and serves the token meanwhile', async () => {
    const count = 300;
    const baseline = await openFds();
    const sockets: Socket[] = [];
    let connected = 0;
    let allConnected: () => void = () => undefined;
    const ready = new Promise<void>((resolve) => (allConnected = resolve));
    const heads = ['', 'GET /v1/streams HTTP/1.1\r\nHost: x\r\n', 'POST /v1/apply HTTP/1.1\r\nContent-Le'];
    const outcomes = Array.from({ length: count }, (_, i) =>
      halfSent(heads[i % heads.length] ?? '', sockets, () => {
        connected += 1;
        if (connected === count) allConnected();
      }),
    );
    try {
      await ready;
      // They hold a socket each in the daemon now...
      const held = await eventually(openFds, (fds) => fds >= baseline + count, 5000);
      // ...and requests with the token are still served.
      for (let i = 0; i < 3; i += 1) {
        const answer = await daemon.request('GET', '/v1/streams', undefined, auth);
        expect(answer.status).toBe(200);
      }
      const created = await daemon.request(
        'POST',
        '/v1/streams',
        { port: daemon.rangeStart, backend: '127.0.0.1:1' },
        auth,
      );
      expect(created.status).toBe(201);

      const results = await Promise.all(outcomes);
      const slowest = Math.max(...results.map((result) => result.endedAfterMs));
      expect(slowest).toBeLessThan(HEADERS_TIMEOUT_MS + 3000);
      // Everyone who sent a byte got a 408 (who sent nothing gets nothing); none of them closed its side.
      const answered = results.filter((result) => result.answer !== '');
      expect(answered.length).toBeGreaterThanOrEqual(count - Math.ceil(count / heads.length));
      for (const result of answered) expect(result.answer).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/);
      // The daemon has let go of every one of those sockets, though the clients still hold theirs.
      const after = await eventually(openFds, (fds) => fds <= baseline + 5, 3000);
      if (process.env.VERBOSE_LIMITS)
        process.stderr.write(
          `fds: baseline ${baseline}, held ${held}, after ${after}; slowest cut-off ${slowest} ms\n`,
        );
      expect(after).toBeLessThanOrEqual(baseline + 5);
    } finally {
      for (const socket of sockets) socket.destroy();
    }
  }, 30_000);

  it('answers a request without the token 401 and closes its connection, though its body never comes', async () => {
    const baseline = await openFds();
    const sockets: Socket[] = [];
    try {
      const result = await halfSent(
        'POST /v1/apply HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"streams":',
        sockets,
        () => undefined,
      );
      expect(result.answer).toMatch(/^HTTP\/1\.1 401 /);
      expect(result.answer).toMatch(/\r\nConnection: close\r\n/i);
      expect(result.endedAfterMs).toBeLessThan(HEADERS_TIMEOUT_MS);
      expect(await eventually(openFds, (fds) => fds <= baseline, 3000)).toBeLessThanOrEqual(baseline);
    } finally {
      for (const socket of sockets) socket.destroy();
    }
  });
});
