/**
 * The HTTP server's limits against real sockets: a client that dribbles its headers or its body is
 * cut off, oversized heads and bodies are refused, and none of it takes the server down.
 */
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import type { Server } from 'node:http';
import { type Socket, connect } from 'node:net';
import express from 'express';
import { createHttpServer } from '../src/http/server.js';

let server: Server;
let port: number;

beforeEach(async () => {
  const app = express();
  app.use(express.json({ limit: '1kb' }));
  app.all('/echo', (req, res) => {
    res.json({ ok: true, body: req.body as unknown });
  });
  app.use((error: { status?: number }, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
    res.status(error.status ?? 500).json({ refused: true });
  });
  server = createHttpServer(app, { headersTimeoutMs: 400, requestTimeoutMs: 800, keepAliveTimeoutMs: 300, maxHeaderSize: 2048 });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  port = (server.address() as { port: number }).port;
});

afterEach(async () => {
  server.closeAllConnections();
  await new Promise((done) => server.close(done));
});

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
    const chunks = ['GET /echo HTTP/1.1\r\n', ...Array.from({ length: 40 }, (_, i) => `X-Slow-${i}: x\r\n`)];
    const { answer, closedAfterMs } = await slowClient(chunks, 100);
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
    expect(closedAfterMs).toBeLessThan(3000);
  });

  it('cuts off a client that sends its body too slowly', async () => {
    const head = 'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n';
    const { answer, closedAfterMs } = await slowClient([head, ...Array.from({ length: 50 }, () => ' ')], 100);
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
    expect(closedAfterMs).toBeLessThan(4000);
  });

  it('refuses a request head over the size limit with 431', async () => {
    const response = await fetch(`http://127.0.0.1:${port}/echo`, { headers: { 'x-big': 'y'.repeat(4096) } });
    expect(response.status).toBe(431);
  });

  it('refuses a JSON body over the limit with 413, and still serves the next request', async () => {
    const big = await fetch(`http://127.0.0.1:${port}/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ x: 'z'.repeat(4096) }) });
    expect(big.status).toBe(413);
    const small = await fetch(`http://127.0.0.1:${port}/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":1}' });
    expect(await small.json()).toEqual({ ok: true, body: { a: 1 } });
  });
});
