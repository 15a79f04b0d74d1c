/**
 * The HTTP server's limits against real sockets: a client that dribbles its headers or its body is
 * cut off, oversized heads and bodies are refused, and none of it takes the server down.
 */

import type { Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import type { ConductorError } from '@stream-conductor/shared';
import express from 'express';
import { requireToken } from '../src/http/auth.js';
import { createHttpServer } from '../src/http/server.js';

const TOKEN = 'test-token-0123456789abcdef';

let server: Server;
let port: number;

beforeEach(async () => {
  const app = express();
  app.use(
    requireToken([{ name: 'test', token: TOKEN }], (_req, res, error: ConductorError) => {
      res.status(401).json(error.toBody());
    }),
  );
  app.use(express.json({ limit: '1kb' }));
  app.all('/echo', (req, res) => {
    res.json({ ok: true, body: req.body as unknown });
  });
  app.use((error: { status?: number }, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
    res.status(error.status ?? 500).json({ refused: true });
  });
  server = createHttpServer(app, {
    headersTimeoutMs: 400,
    requestTimeoutMs: 800,
    keepAliveTimeoutMs: 300,
    maxHeaderSize: 2048,
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  port = (server.address() as { port: number }).port;
  serverSockets = new Map();
  server.on('connection', (socket: Socket) => {
    const entry = serverSocket(socket.remotePort ?? 0);
    socket.on('close', entry.close);
  });
});

afterEach(async () => {
  server.closeAllConnections();
  await new Promise((done) => server.close(done));
});

const auth = { authorization: `Bearer ${TOKEN}` };

/** The server's count of open connections. */
function openConnections(): Promise<number> {
  return new Promise((resolve, reject) =>
    server.getConnections((error, count) => (error ? reject(error) : resolve(count))),
  );
}

interface Outcome {
  answer: string;
  /** Whether the server closed its side (FIN). */
  ended: boolean;
  /** Whether the server's own socket closed (not only half-closed) within a second of its FIN. */
  serverClosed: boolean;
  closedAfterMs: number;
}

/** The server's sockets by the client's port, each resolved when it closes. */
let serverSockets: Map<number, { closed: Promise<void>; close: () => void }>;

function serverSocket(clientPort: number): { closed: Promise<void>; close: () => void } {
  let entry = serverSockets.get(clientPort);
  if (entry === undefined) {
    let close: () => void = () => undefined;
    const closed = new Promise<void>((resolve) => (close = resolve));
    entry = { closed, close };
    serverSockets.set(clientPort, entry);
  }
  return entry;
}

/**
 * Sends `data` (a request, or part of one) and keeps its own side open, as a client that never
 * closes would. Resolves once the server has closed its side and its own socket has closed too (a
 * server that only half-closes keeps the socket, and its file descriptor, until the client goes:
 * then `serverClosed` is false). A connection the server refused at accept has no socket there.
 */
function halfOpenClient(data: string, connected?: () => void): Promise<Outcome> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket: Socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let answer = '';
    let localPort = 0;
    socket.on('connect', () => {
      localPort = socket.localPort ?? 0;
      if (data !== '') socket.write(data);
      connected?.();
    });
    socket.on('data', (chunk) => (answer += chunk.toString()));
    socket.on('error', () => undefined);
    socket.on('end', () => {
      const accepted = serverSockets.has(localPort);
      const deadline = new Promise<boolean>((done) => setTimeout(() => done(false), 1000).unref());
      const closed = accepted
        ? Promise.race([serverSocket(localPort).closed.then(() => true), deadline])
        : Promise.resolve(true);
      void closed.then((serverClosed) => {
        resolve({ answer, ended: true, serverClosed, closedAfterMs: Date.now() - started });
        socket.destroy();
      });
    });
    socket.on('close', () =>
      resolve({ answer, ended: false, serverClosed: false, closedAfterMs: Date.now() - started }),
    );
  });
}

/** Sends `chunks` with pauses and resolves with what the server answered and when it hung up. */
function slowClient(chunks: string[], pauseMs: number): Promise<{ answer: string; closedAfterMs: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket: Socket = connect({ port, host: '127.0.0.1' });
    let answer = '';
    let index = 0;
    const timer = setInterval(() => {
      if (index < chunks.length && !socket.destroyed) socket.write(chunks[index++] ?? '');
    }, pauseMs);
    socket.on('data', (chunk) => (answer += chunk.toString()));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearInterval(timer);
      resolve({ answer, closedAfterMs: Date.now() - started });
    });
  });
}

describe('the HTTP server limits', () => {
  it('cuts off a client that sends its headers too slowly', async () => {
    const chunks = [
      `GET /echo HTTP/1.1\r\nAuthorization: Bearer ${TOKEN}\r\n`,
      ...Array.from({ length: 40 }, (_, i) => `X-Slow-${i}: x\r\n`),
    ];
    const { answer, closedAfterMs } = await slowClient(chunks, 100);
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
    expect(closedAfterMs).toBeLessThan(3000);
  });

  it('cuts off a client that sends its body too slowly', async () => {
    const head = `POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n`;
    const { answer, closedAfterMs } = await slowClient([head, ...Array.from({ length: 50 }, () => ' ')], 100);
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
    expect(closedAfterMs).toBeLessThan(4000);
  });

  it('refuses a request head over the size limit with 431', async () => {
    const response = await fetch(`http://127.0.0.1:${port}/echo`, { headers: { ...auth, 'x-big': 'y'.repeat(4096) } });
    expect(response.status).toBe(431);
  });

  it('refuses a JSON body over the limit with 413, and still serves the next request', async () => {
    const big = await fetch(`http://127.0.0.1:${port}/echo`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ x: 'z'.repeat(4096) }),
    });
    expect(big.status).toBe(413);
    const small = await fetch(`http://127.0.0.1:${port}/echo`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: '{"a":1}',
    });
    expect(await small.json()).toEqual({ ok: true, body: { a: 1 } });
  });

  it('destroys a connection it answered 400 or 408, also when the client keeps its side open', async () => {
    const malformed = await halfOpenClient('NOT HTTP AT ALL\r\n\r\n');
    expect(malformed.answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(malformed.answer).toContain('Connection: close');
    expect(malformed).toMatchObject({ ended: true, serverClosed: true });
    const timedOut = await halfOpenClient(`GET /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\n`);
    expect(timedOut.answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(timedOut).toMatchObject({ ended: true, serverClosed: true });
    expect(timedOut.closedAfterMs).toBeLessThan(3000);
    expect(await openConnections()).toBe(0);
  }, 10_000);

  it('closes hundreds of half-sent requests within the headers timeout, and serves requests with the token meanwhile', async () => {
    const count = 300;
    let connected = 0;
    let allConnected: () => void = () => undefined;
    const ready = new Promise<void>((resolve) => (allConnected = resolve));
    const onConnect = (): void => {
      connected += 1;
      if (connected === count) allConnected();
    };
    const clients = Array.from({ length: count }, (_, i) =>
      halfOpenClient(
        i % 3 === 0 ? '' : i % 3 === 1 ? 'GET /echo HTTP/1.1\r\nHost: x\r\n' : 'POST /echo HTTP/1.1\r\nContent-Le',
        onConnect,
      ),
    );
    await ready;
    // All of them are open now; the server still answers.
    for (let i = 0; i < 5; i += 1) {
      const answer = await fetch(`http://127.0.0.1:${port}/echo`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: `{"i":${i}}`,
      });
      expect(await answer.json()).toEqual({ ok: true, body: { i } });
    }
    const outcomes = await Promise.all(clients);
    const slowest = Math.max(...outcomes.map((outcome) => outcome.closedAfterMs));
    expect(slowest).toBeLessThan(3000);
    // A client that sent nothing gets no answer; every other gets its 408, and then a closed socket.
    expect(outcomes.filter((outcome) => outcome.answer.startsWith('HTTP/1.1 408 ')).length).toBeGreaterThanOrEqual(
      (count * 2) / 3 - 1,
    );
    expect(outcomes.filter((outcome) => !outcome.ended || !outcome.serverClosed)).toEqual([]);
    server.closeIdleConnections();
    expect(await openConnections()).toBe(0);
  }, 20_000);

  it('closes the connection of a request without the token once the 401 has left, body or not', async () => {
    const head =
      'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"half":';
    const outcome = await halfOpenClient(head);
    expect(outcome.answer).toMatch(/^HTTP\/1\.1 401 /);
    expect(outcome.answer).toMatch(/\r\nConnection: close\r\n/i);
    expect(outcome).toMatchObject({ ended: true, serverClosed: true });
    // Closed by the 401, not by the request timeout (800 ms) that would cut off the missing body.
    expect(outcome.closedAfterMs).toBeLessThan(800);
    expect(await openConnections()).toBe(0);
  }, 10_000);

  it('keeps at most maxConnections open: one more is closed at once, unanswered', async () => {
    // A server of its own with a small limit, and timeouts long enough that none of the held
    // connections is cut off while the test fills the limit, however slow the machine.
    const limit = 20;
    const app = express();
    app.get('/echo', (_req, res) => {
      res.json({ ok: true });
    });
    const small = createHttpServer(app, { headersTimeoutMs: 30_000, requestTimeoutMs: 60_000, maxConnections: limit });
    const accepted: Socket[] = [];
    let filled: () => void = () => undefined;
    const full = new Promise<void>((resolve) => (filled = resolve));
    small.on('connection', (socket: Socket) => {
      accepted.push(socket);
      if (accepted.length === limit) filled();
    });
    let dropped: () => void = () => undefined;
    const drop = new Promise<void>((resolve) => (dropped = resolve));
    small.on('drop', () => dropped());
    await new Promise<void>((done) => small.listen(0, '127.0.0.1', done));
    const smallPort = (small.address() as { port: number }).port;
    const clients: Socket[] = [];
    const open = (): Promise<{ answer: string; ended: boolean }> =>
      new Promise((resolve) => {
        const socket = connect({ port: smallPort, host: '127.0.0.1', allowHalfOpen: true });
        clients.push(socket);
        let answer = '';
        socket.on('connect', () => socket.write('GET /echo HTTP/1.1\r\n'));
        socket.on('data', (chunk) => (answer += chunk.toString()));
        socket.on('error', () => undefined);
        socket.on('end', () => resolve({ answer, ended: true }));
        socket.on('close', () => resolve({ answer, ended: false }));
      });
    try {
      for (let i = 0; i < limit; i += 1) void open();
      await full;
      // One more: the server closes it as it arrives, before any answer.
      const extra = await open();
      await drop;
      expect(extra).toEqual({ answer: '', ended: true });
      expect(accepted).toHaveLength(limit);
      // Once a held connection goes, there is room again.
      clients[0]?.destroy();
      await new Promise<void>((resolve) => accepted[0]?.once('close', () => resolve()));
      const after = await fetch(`http://127.0.0.1:${smallPort}/echo`);
      expect(after.status).toBe(200);
    } finally {
      for (const socket of clients) socket.destroy();
      small.closeAllConnections();
      await new Promise((done) => small.close(done));
    }
  }, 20_000);
});
