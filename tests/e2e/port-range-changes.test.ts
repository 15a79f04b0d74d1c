/**
 * Changing a port range in place with the real daemon, nginx and CLI on loopback: a PUT that grows
 * a range (or turns a single port into a range) onto a port another process holds is refused 409
 * PORT_IN_USE naming that port, with nothing changed and the range still serving.
 */

import { createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { StreamView } from '@stream-conductor/shared';
import type { Daemon } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { EchoBackend, roundTrip } from '../helpers/net.js';
import { snapshot } from '../helpers/state.js';

let daemon: Daemon;
let S: number;
const backends: EchoBackend[] = [];

const daemons = daemonFixture();

/** The ports first..last, inclusive. */
const span = (first: number, last: number): number[] =>
  Array.from({ length: last - first + 1 }, (_, index) => first + index);

beforeAll(async () => {
  daemon = await daemons.start({ rangeSize: 40 });
  S = daemon.rangeStart;
  // Backends on the streams' own port numbers, on another loopback address than nginx's 127.0.0.1.
  for (const port of span(S, S + 29)) backends.push(await EchoBackend.start(`a${port}`, port, '127.0.0.2'));
});

afterAll(async () => {
  await Promise.all(backends.map((backend) => backend.close()));
});

/** A plain TCP server of this process on 127.0.0.1:port, standing for another program. */
async function holdPort(port: number): Promise<Server> {
  const server = createServer((socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return server;
}

const close = (server: Server): Promise<void> => new Promise((resolve) => server.close(() => resolve()));

const errorOf = (json: unknown): { code: string; message: string } =>
  (json as { error: { code: string; message: string } }).error;

describe('growing a range onto a port another process holds', () => {
  it('a range that grows is refused 409 PORT_IN_USE naming the port, nothing changed, the range still serves', async () => {
    const created = await daemon.request('POST', '/v1/streams', { port: `${S}-${S + 4}`, backend: '127.0.0.2' });
    expect(created.status).toBe(201);
    const holder = await holdPort(S + 7);
    try {
      const before = await snapshot(daemon);
      const grown = await daemon.request('PUT', `/v1/streams/${S}-${S + 9}`, {
        port: `${S}-${S + 9}`,
        backend: '127.0.0.2',
      });
      expect(grown.status).toBe(409);
      expect(errorOf(grown.json).code).toBe('PORT_IN_USE');
      expect(errorOf(grown.json).message).toContain(`port ${S + 7} is held by another process`);
      expect(await snapshot(daemon)).toEqual(before);
      const view = ((await daemon.get(`/v1/streams/${S}`)).json as { stream: StreamView }).stream;
      expect(view).toMatchObject({ port: S, portEnd: S + 4 });
      for (const port of [S, S + 4]) expect(await roundTrip(port, 'still')).toBe(`a${port}:still`);
    } finally {
      await close(holder);
    }
    // With the port free again the same change goes through, and every new port serves.
    const again = await daemon.request('PUT', `/v1/streams/${S}-${S + 9}`, {
      port: `${S}-${S + 9}`,
      backend: '127.0.0.2',
    });
    expect(again.status).toBe(200);
    for (const port of [S + 5, S + 7, S + 9]) expect(await roundTrip(port, 'new')).toBe(`a${port}:new`);
    expect((await daemon.request('DELETE', `/v1/streams/${S}-${S + 9}`)).status).toBe(200);
  });

  it('a single port turned into a range starting there is refused the same way', async () => {
    const P = S + 20;
    const created = await daemon.request('POST', '/v1/streams', { port: P, backend: `127.0.0.2:${P}` });
    expect(created.status).toBe(201);
    const holder = await holdPort(P + 3);
    try {
      const before = await snapshot(daemon);
      const grown = await daemon.request('PUT', `/v1/streams/${P}-${P + 4}`, {
        port: `${P}-${P + 4}`,
        backend: '127.0.0.2',
      });
      expect(grown.status).toBe(409);
      expect(errorOf(grown.json).code).toBe('PORT_IN_USE');
      expect(errorOf(grown.json).message).toContain(`port ${P + 3} is held by another process`);
      expect(await snapshot(daemon)).toEqual(before);
      expect(await roundTrip(P, 'still')).toBe(`a${P}:still`);
    } finally {
      await close(holder);
    }
    expect((await daemon.request('DELETE', `/v1/streams/${P}`)).status).toBe(200);
  });
});
