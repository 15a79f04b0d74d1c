/**
 * The apply pipeline end to end: a real daemon, a real nginx, real bytes on loopback. Every
 * refusal is checked to have left the files, the store, the listing and the listening sockets
 * exactly as they were.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { Daemon } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { connectOutcome, EchoBackend, roundTrip } from '../helpers/net.js';
import { holdPort } from '../helpers/ports.js';
import { snapshot } from '../helpers/state.js';

let daemon: Daemon;
let alpha: EchoBackend;
let beta: EchoBackend;

const daemons = daemonFixture();

beforeAll(async () => {
  alpha = await EchoBackend.start('alpha');
  beta = await EchoBackend.start('beta');
  daemon = await daemons.start({ rangeSize: 10 });
});

afterAll(async () => {
  await alpha?.close();
  await beta?.close();
});

const legacy = async (path: string): Promise<Record<string, unknown>> =>
  (await daemon.get(path)).json as Record<string, unknown>;

/**
 * A backend that answers only once the client has finished sending (it read EOF), the way a
 * request piped through `printf ... | nc` or `nc -q` is answered; resolves to what the client got.
 */
async function halfClosedExchange(port: number, payload: string): Promise<string> {
  const { connect } = await import('node:net');
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no end of the reply within 5 s (got ${JSON.stringify(Buffer.concat(chunks).toString())})`));
    }, 5000);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(Buffer.concat(chunks).toString());
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.end(payload); // sends, then shuts down the sending side only
  });
}

describe('half-closed sessions', () => {
  it('carry the reply to a client that shut down its sending side, as a direct connection does', async () => {
    const { createServer } = await import('node:net');
    // Reads the whole request (until EOF), then answers and closes.
    const server = createServer({ allowHalfOpen: true }, (socket) => {
      const got: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => got.push(chunk));
      socket.on('end', () => socket.end(`reply to ${Buffer.concat(got).toString()}`));
      socket.on('error', () => socket.destroy());
    });
    await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
    const backendPort = (server.address() as { port: number }).port;
    const port = daemon.rangeStart + 8;
    try {
      expect(await halfClosedExchange(backendPort, 'direct')).toBe('reply to direct');
      expect(await legacy(`/createstream/${port}/127.0.0.1:${backendPort}`)).toEqual({ result: 'ok', errors: '' });
      expect(await halfClosedExchange(port, 'through the stream')).toBe('reply to through the stream');
    } finally {
      await legacy(`/removestream/${port}`);
      await new Promise<void>((done) => server.close(() => done()));
    }
  });
});

describe('listen addresses that pass validation but cannot be bound', () => {
  it.each<[string, RegExp]>([
    ['192.0.2.99', /listen address 192\.0\.2\.99 cannot be bound on this host: it is not one of its addresses/],
    ['::ffff:127.0.0.1', /listen address ::ffff:7f00:1 cannot be bound on this host.*write the IPv4 address itself/],
    ['2001:db8::99', /listen address 2001:db8::99 cannot be bound on this host/],
  ])('%s is refused at once with a 400 that says why, and a create beside it goes through', async (address, reason) => {
    const [bad, good] = [daemon.rangeStart + 6, daemon.rangeStart + 7];
    const before = await snapshot(daemon);
    const started = Date.now();
    try {
      const [refused, created] = await Promise.all([
        daemon.request('POST', '/v1/streams', {
          port: bad,
          backend: `127.0.0.1:${alpha.port}`,
          listenAddress: address,
        }),
        daemon.request('POST', '/v1/streams', { port: good, backend: `127.0.0.1:${alpha.port}` }),
      ]);
      expect(refused.status).toBe(400);
      expect(JSON.stringify(refused.json)).toMatch(reason);
      expect(created.status).toBe(201);
      // Well before nginx's bind retries (5 x 500 ms) or the reload timeout could have run out.
      expect(Date.now() - started).toBeLessThan(2500);
      expect(await roundTrip(good, 'beside')).toBe('alpha:beside');
      expect(await connectOutcome(bad)).toBe('refused');
    } finally {
      await daemon.request('DELETE', `/v1/streams/${good}`);
    }
    expect(await snapshot(daemon)).toEqual(before);
  });
});

describe('create and remove', () => {
  it('forwards bytes the moment create answers, and refuses connections the moment rm answers', async () => {
    const port = daemon.rangeStart;
    expect(await connectOutcome(port)).toBe('refused');
    expect(await legacy(`/createstream/${port}/127.0.0.1:${alpha.port}`)).toEqual({ result: 'ok', errors: '' });
    expect(await roundTrip(port, 'hello')).toBe('alpha:hello');
    expect(await legacy(`/removestream/${port}`)).toEqual({ result: 'ok', errors: '' });
    expect(await connectOutcome(port)).toBe('refused');
    expect(await legacy(`/hasstream/${port}`)).toEqual({ result: 'false' });
  });

  it('serves several streams to different backends side by side', async () => {
    const [a, b] = [daemon.rangeStart + 1, daemon.rangeStart + 2];
    await legacy(`/createstream/${a}/127.0.0.1:${alpha.port}`);
    await legacy(`/createstream/${b}/localhost:${beta.port}`);
    expect(await roundTrip(a, 'x')).toBe('alpha:x');
    expect(await roundTrip(b, 'y')).toBe('beta:y');
    await legacy(`/removestream/${a}`);
    expect(await connectOutcome(a)).toBe('refused');
    expect(await roundTrip(b, 'still')).toBe('beta:still');
    await legacy(`/removestream/${b}`);
  });

  it('forwards to an IPv6 backend', async () => {
    const v6 = await EchoBackend.start('six', 0, '::1');
    try {
      const port = daemon.rangeStart + 3;
      expect(await legacy(`/createstream/${port}/[::1]:${v6.port}`)).toMatchObject({ result: 'ok' });
      expect(await roundTrip(port, 'v6')).toBe('six:v6');
      expect((await daemon.get('/getstreams')).json).toEqual([{ listen: port, proxy_pass: `[::1]:${v6.port}` }]);
      await legacy(`/removestream/${port}`);
    } finally {
      await v6.close();
    }
  });

  it('keeps an established session alive when its stream is removed, but takes no new one', async () => {
    const port = daemon.rangeStart + 4;
    await legacy(`/createstream/${port}/127.0.0.1:${alpha.port}`);
    const { connect } = await import('node:net');
    const socket = connect({ port, host: '127.0.0.1' });
    await new Promise((done) => socket.once('connect', done));
    await legacy(`/removestream/${port}`);
    expect(await connectOutcome(port)).toBe('refused');
    const answer = await new Promise<string>((done) => {
      socket.once('data', (chunk) => done(chunk.toString()));
      socket.write('after');
    });
    expect(answer).toBe('alpha:after');
    socket.destroy();
  });
});

describe('refusals change nothing', () => {
  let live: number;

  beforeAll(async () => {
    live = daemon.rangeEnd;
    expect(await legacy(`/createstream/${live}/127.0.0.1:${alpha.port}`)).toMatchObject({ result: 'ok' });
  });

  afterAll(async () => {
    await legacy(`/removestream/${live}`);
  });

  const unchanged = async (action: () => Promise<void>): Promise<void> => {
    const before = await snapshot(daemon);
    await action();
    expect(await snapshot(daemon)).toEqual(before);
    expect(await roundTrip(live, 'alive')).toBe('alpha:alive');
  };

  it('refuses a second stream on a taken port', async () => {
    await unchanged(async () => {
      const answer = await legacy(`/createstream/${live}/127.0.0.1:${beta.port}`);
      expect(answer).toEqual({
        result: 'error',
        errors: `port ${live} already has a stream (to 127.0.0.1:${alpha.port})`,
      });
    });
    expect(await roundTrip(live, 'same')).toBe('alpha:same');
  });

  it.each([
    ['below the range', -1],
    ['above the range', 10],
  ])('refuses a port %s', async (_what, offset) => {
    await unchanged(async () => {
      const port = offset < 0 ? daemon.rangeStart - 1 : daemon.rangeStart + offset;
      const answer = await legacy(`/createstream/${port}/127.0.0.1:${alpha.port}`);
      expect(answer).toEqual({
        result: 'error',
        errors: `port ${port} is outside the daemon's port range ${daemon.rangeStart}-${daemon.rangeEnd}`,
      });
    });
  });

  it('refuses port 80, 0 and 65536', async () => {
    await unchanged(async () => {
      expect((await legacy(`/createstream/80/127.0.0.1:${alpha.port}`)).result).toBe('error');
      expect((await legacy(`/createstream/0/127.0.0.1:${alpha.port}`)).errors).toMatch(
        /port must be a whole number from 1 to 65535/,
      );
      expect((await legacy(`/createstream/65536/127.0.0.1:${alpha.port}`)).errors).toMatch(
        /port must be a whole number from 1 to 65535/,
      );
    });
  });

  it.each(['abc', '-1', '9000.5', '1e4', '%20', '0x10'])(
    'answers 404 for the non-number port %p, as the old routes did',
    async (port) => {
      await unchanged(async () => {
        const answer = await daemon.get(`/createstream/${port}/127.0.0.1:22`);
        expect(answer.status).toBe(404);
        expect(answer.json).toMatchObject({ result: 'error' });
      });
    },
  );

  it.each([
    ['a:1;proxy_timeout 1s', 'a%3A1%3Bproxy_timeout%201s'],
    ['x;y:22', 'x%3By:22'],
    ['x{:22', 'x%7B:22'],
    ['x}:22', 'x%7D:22'],
    ['x#y:22', 'x%23y:22'],
    ['x\ny:22', 'x%0Ay:22'],
    ['x y:22', 'x%20y:22'],
    ['"x":22', '%22x%22:22'],
    ['$x:22', '%24x:22'],
    ['x\\y:22', 'x%5Cy:22'],
    ['unix:/tmp/x.sock', 'unix:%2Ftmp%2Fx.sock'],
    ['include /etc/passwd:1', 'include%20%2Fetc%2Fpasswd:1'],
    ['overlong name', `${'a'.repeat(64)}.example:22`],
    ['overlong backend', `${`${'a'.repeat(60)}.`.repeat(5)}x:22`],
    ['no port', 'mybackend'],
    ['port 0', 'mybackend:0'],
    ['port 65536', 'mybackend:65536'],
    ['IPv6 without brackets', '::1:22'],
    ['bad IPv4', '300.1.1.1:22'],
    ['non-ASCII', 'b%C3%BCcher.de:80'],
  ])('refuses the backend %p and writes nothing', async (_what, encoded) => {
    await unchanged(async () => {
      const answer = await daemon.get(`/createstream/${daemon.rangeStart + 5}/${encoded}`);
      expect(answer.status).toBe(200);
      expect(answer.json).toMatchObject({ result: 'error' });
      expect(String((answer.json as { errors: string }).errors)).toMatch(/backend|label|host/);
    });
  });

  it('answers 404 for a backend holding a slash, as the old routes did', async () => {
    await unchanged(async () => {
      const answer = await daemon.get(`/createstream/${daemon.rangeStart + 5}/unix:/tmp/x.sock`);
      expect(answer.status).toBe(404);
    });
  });

  it('refuses a port another process holds, and leaves the other streams alone', async () => {
    const port = daemon.rangeStart + 6;
    const held = await holdPort(port);
    try {
      await unchanged(async () => {
        const answer = await legacy(`/createstream/${port}/127.0.0.1:${alpha.port}`);
        expect(answer).toEqual({ result: 'error', errors: `port ${port} is held by another process on this host` });
      });
    } finally {
      await held.close();
    }
  });

  it("refuses a backend name that does not resolve, with nginx's reason, and leaves the rest alone", async () => {
    await unchanged(async () => {
      const answer = await legacy(`/createstream/${daemon.rangeStart + 7}/no-such-host.invalid:22`);
      expect(answer.result).toBe('error');
      expect(answer.errors).toBe(
        `nginx refused the stream on port ${daemon.rangeStart + 7}: host not found in upstream "no-such-host.invalid"`,
      );
    });
  });

  it('skips ports other processes hold when it picks a free port', async () => {
    const first = await legacy('/getfreeport');
    expect(first).toEqual({ result: 'ok', port: daemon.rangeStart });
    const held = await holdPort(daemon.rangeStart);
    try {
      expect(await legacy('/getfreeport')).toEqual({ result: 'ok', port: daemon.rangeStart + 1 });
    } finally {
      await held.close();
    }
  });

  it('answers "not found" for removing a port without a stream', async () => {
    await unchanged(async () => {
      expect(await legacy(`/removestream/${daemon.rangeStart + 8}`)).toEqual({ result: 'error', error: 'not found' });
    });
  });
});
