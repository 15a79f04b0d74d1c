/** Real traffic on loopback: bytes through a port, and whether a port takes connections at all. */
import { type Socket, connect, createServer, type Server } from 'node:net';

/**
 * A TCP backend that answers every chunk it receives with `<name>:<chunk>`, so a test knows
 * which backend the bytes reached.
 */
export class EchoBackend {
  /** Connections accepted so far. */
  accepted = 0;
  private readonly sockets = new Set<Socket>();
  private readonly server: Server;

  private constructor(readonly name: string) {
    this.server = createServer((socket) => {
      this.accepted += 1;
      this.sockets.add(socket);
      socket.on('data', (chunk) => socket.write(`${name}:${chunk.toString('utf8')}`));
      socket.on('error', () => socket.destroy());
      socket.on('close', () => this.sockets.delete(socket));
    });
  }

  static async start(name: string, port = 0, host = '127.0.0.1'): Promise<EchoBackend> {
    const backend = new EchoBackend(name);
    await new Promise<void>((resolve, reject) => {
      backend.server.once('error', reject);
      backend.server.listen({ port, host }, () => resolve());
    });
    return backend;
  }

  get port(): number {
    const address = this.server.address();
    if (address === null || typeof address === 'string') throw new Error('backend not listening');
    return address.port;
  }

  /** Connections open right now. */
  get open(): number {
    return this.sockets.size;
  }

  close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** Sends `payload` to `port` and resolves with the whole answer (up to the expected length). */
export function roundTrip(port: number, payload = 'ping', options: { host?: string; timeoutMs?: number; expectLength?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: options.host ?? '127.0.0.1' });
    let answer = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no full answer from port ${port} within ${options.timeoutMs ?? 3000} ms (got ${JSON.stringify(answer)})`));
    }, options.timeoutMs ?? 3000);
    socket.on('connect', () => socket.write(payload));
    socket.on('data', (chunk) => {
      answer += chunk.toString('utf8');
      if (answer.length >= (options.expectLength ?? payload.length + 1)) {
        clearTimeout(timer);
        socket.destroy();
        resolve(answer);
      }
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      if (answer.length < (options.expectLength ?? payload.length + 1)) reject(new Error(`port ${port} closed the connection after ${JSON.stringify(answer)}`));
    });
  });
}

/** 'refused' when nothing listens on the port, 'open' when a connection is accepted. */
export function connectOutcome(port: number, host = '127.0.0.1'): Promise<'refused' | 'open'> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host });
    socket.on('connect', () => {
      socket.destroy();
      resolve('open');
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ECONNREFUSED') resolve('refused');
      else reject(error);
    });
  });
}

/** The TCP ports in LISTEN state on this host, from the kernel's table. */
export async function listeningPorts(): Promise<Set<number>> {
  const { readFile } = await import('node:fs/promises');
  const ports = new Set<number>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await readFile(file, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields[3] === '0A') ports.add(Number.parseInt((fields[1] ?? '').split(':')[1] ?? '0', 16));
    }
  }
  return ports;
}
