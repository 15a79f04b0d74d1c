// @ts-check
/** Ports, backends and traffic: free port blocks, echo backends, round trips, LISTEN sockets. */
import { readFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';

/**
 * @param {number} port
 * @param {string} host
 * @returns {Promise<boolean>}
 */
export function bindable(port, host) {
  return new Promise((done) => {
    const server = createServer();
    server.once('error', () => done(false));
    server.listen({ port, host, exclusive: true }, () => server.close(() => done(true)));
  });
}

/**
 * A block of `size` consecutive free ports below 32768 (the kernel's outgoing range starts there
 * on this host), checked on the IPv4 wildcard and on loopback.
 * @param {number} size
 * @param {number | undefined} base
 */
export async function freePortBlock(size, base) {
  const low = size <= 12_000 ? 20_000 : 1024;
  for (let attempt = 0; attempt < (base === undefined ? 50 : 1); attempt += 1) {
    const start = base ?? low + Math.floor(Math.random() * (32_767 - size - low));
    let free = true;
    for (let port = start; port < start + size && free; port += 1)
      free = (await bindable(port, '0.0.0.0')) && (await bindable(port, '127.0.0.1'));
    if (free) return start;
  }
  throw new Error(
    base === undefined
      ? `no free block of ${size} ports below 32768 found`
      : `ports ${base}-${base + size - 1} are not all free`,
  );
}

/** A TCP backend that answers every chunk with `<name>:<chunk>`. */
export class EchoBackend {
  /** @param {string} name */
  constructor(name) {
    this.name = name;
    /** @type {Set<import('node:net').Socket>} */
    this.sockets = new Set();
    this.server = createServer((socket) => {
      this.sockets.add(socket);
      socket.on('data', (chunk) => socket.write(`${name}:${chunk.toString('utf8')}`));
      socket.on('error', () => socket.destroy());
      socket.on('close', () => this.sockets.delete(socket));
    });
  }

  /** @param {string} name */
  static async start(name) {
    const backend = new EchoBackend(name);
    await new Promise((done, fail) => {
      backend.server.once('error', fail);
      backend.server.listen({ port: 0, host: '127.0.0.1' }, () => done(undefined));
    });
    return backend;
  }

  get port() {
    const address = this.server.address();
    if (address === null || typeof address === 'string') throw new Error('backend not listening');
    return address.port;
  }

  get address() {
    return `127.0.0.1:${this.port}`;
  }

  /** @returns {Promise<void>} */
  close() {
    for (const socket of this.sockets) socket.destroy();
    return new Promise((done) => this.server.close(() => done()));
  }
}

/**
 * Sends `payload` to `port` and resolves with the whole answer (`expectLength` characters).
 * @param {number} port
 * @param {string} payload
 * @param {number} expectLength
 * @returns {Promise<string>}
 */
export function roundTrip(port, payload, expectLength, timeoutMs = 3000) {
  return new Promise((done, fail) => {
    const socket = connect({ port, host: '127.0.0.1' });
    let answer = '';
    const timer = setTimeout(() => {
      socket.destroy();
      fail(new Error(`no full answer within ${timeoutMs} ms (got ${JSON.stringify(answer)})`));
    }, timeoutMs);
    socket.on('connect', () => socket.write(payload));
    socket.on('data', (chunk) => {
      answer += chunk.toString('utf8');
      if (answer.length >= expectLength) {
        clearTimeout(timer);
        socket.destroy();
        done(answer);
      }
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      fail(error);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      if (answer.length < expectLength) fail(new Error(`connection closed after ${JSON.stringify(answer)}`));
    });
  });
}

/**
 * 'refused' when nothing listens on the port, 'open' when a connection is accepted.
 * @param {number} port
 * @returns {Promise<string>}
 */
export function connectOutcome(port, timeoutMs = 3000) {
  return new Promise((done) => {
    const socket = connect({ port, host: '127.0.0.1' });
    const timer = setTimeout(() => {
      socket.destroy();
      done('timeout');
    }, timeoutMs);
    socket.on('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      done('open');
    });
    socket.on('error', (/** @type {NodeJS.ErrnoException} */ error) => {
      clearTimeout(timer);
      done(error.code === 'ECONNREFUSED' ? 'refused' : `error ${error.code ?? error.message}`);
    });
  });
}

/** The TCP ports in LISTEN state, any address, from /proc/net/tcp and /proc/net/tcp6. */
export async function listeningPorts() {
  /** @type {Set<number>} */
  const ports = new Set();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await readFile(file, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields[3] === '0A') ports.add(Number.parseInt((fields[1] ?? '').split(':')[1] ?? '0', 16));
    }
  }
  return ports;
}
