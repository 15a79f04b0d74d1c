/** Real traffic on loopback: bytes through a port, and whether a port takes connections at all. */
import { createSocket } from 'node:dgram';
import { connect, createServer, type Server, type Socket } from 'node:net';

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
export function roundTrip(
  port: number,
  payload = 'ping',
  options: { host?: string; timeoutMs?: number; expectLength?: number; localAddress?: string } = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      port,
      host: options.host ?? '127.0.0.1',
      ...(options.localAddress ? { localAddress: options.localAddress } : {}),
    });
    let answer = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new Error(
          `no full answer from port ${port} within ${options.timeoutMs ?? 3000} ms (got ${JSON.stringify(answer)})`,
        ),
      );
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
      if (answer.length < (options.expectLength ?? payload.length + 1))
        reject(new Error(`port ${port} closed the connection after ${JSON.stringify(answer)}`));
    });
  });
}

/** Writes `text` on an open session and resolves with the answer, or `closed` when it ends without one. */
export function exchange(socket: Socket, text: string): Promise<string> {
  return new Promise((resolve) => {
    const done = (value: string): void => {
      socket.off('data', onData);
      socket.off('close', onClose);
      resolve(value);
    };
    const onData = (chunk: Buffer): void => done(chunk.toString('utf8'));
    const onClose = (): void => done('closed');
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.write(text);
  });
}

/**
 * A session to `port` that reached an echo backend (its first bytes came back as
 * `<name>:<payload>`) and stays open; the caller closes it. Throws when it was not served.
 */
export async function openSession(
  port: number,
  options: { host?: string; localAddress?: string; payload?: string } = {},
): Promise<Socket> {
  const { host = '127.0.0.1', payload = 'hello' } = options;
  const socket = connect({ port, host, ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
  socket.on('error', () => undefined);
  const answer = await exchange(socket, payload);
  if (!answer.endsWith(`:${payload}`)) {
    socket.destroy();
    throw new Error(`a session to ${host}:${port} was not served: ${answer}`);
  }
  return socket;
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

/** The TCP ports in LISTEN state on one IPv4 address (`127.0.0.2`, say), from the kernel's table. */
export async function listeningOn(address: string): Promise<Set<number>> {
  const { readFile } = await import('node:fs/promises');
  const hex = address
    .split('.')
    .reverse()
    .map((part) => Number(part).toString(16).padStart(2, '0').toUpperCase())
    .join('');
  const ports = new Set<number>();
  for (const line of (await readFile('/proc/net/tcp', 'utf8')).split('\n').slice(1)) {
    const [, local = '', , state] = line.trim().split(/\s+/);
    const [where, port = '0'] = local.split(':');
    if (state === '0A' && where === hex) ports.add(Number.parseInt(port, 16));
  }
  return ports;
}

/** A UDP backend that answers every datagram with `<name>:<datagram>`. */
export class UdpEchoBackend {
  received = 0;
  private constructor(
    private readonly socket: ReturnType<typeof createSocket>,
    readonly name: string,
  ) {}

  static async start(name: string, host = '127.0.0.1'): Promise<UdpEchoBackend> {
    const socket = createSocket(host.includes(':') ? 'udp6' : 'udp4');
    const backend = new UdpEchoBackend(socket, name);
    socket.on('message', (message, from) => {
      backend.received += 1;
      socket.send(`${name}:${message.toString('utf8')}`, from.port, from.address);
    });
    await new Promise<void>((resolve) => socket.bind(0, host, () => resolve()));
    return backend;
  }

  get port(): number {
    return this.socket.address().port;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }
}

/**
 * A TCP echo and a UDP echo on one port number. The UDP side takes an ephemeral port; the
 * same number on TCP can be busy (another test's outgoing connection may use it as its source
 * port), so a clash is retried with a fresh number.
 */
export async function startTcpUdpPair(
  host = '127.0.0.1',
): Promise<{ tcp: EchoBackend; udp: UdpEchoBackend; port: number }> {
  for (let attempt = 0; ; attempt += 1) {
    const udp = await UdpEchoBackend.start('udp', host);
    try {
      const tcp = await EchoBackend.start('tcp', udp.port, host);
      return { tcp, udp, port: udp.port };
    } catch (error) {
      await udp.close();
      if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt === 9) throw error;
    }
  }
}

/** Sends one datagram to `port` and resolves with the first answer. */
export function udpRoundTrip(port: number, payload: string, host = '127.0.0.1', timeoutMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createSocket(host.includes(':') ? 'udp6' : 'udp4');
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error(`no UDP answer from port ${port} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on('message', (message) => {
      clearTimeout(timer);
      socket.close();
      resolve(message.toString('utf8'));
    });
    socket.send(payload, port, host);
  });
}

/**
 * A TCP backend that records the first line of every connection (where a PROXY protocol header
 * arrives) and then answers like EchoBackend.
 */
export class HeaderRecordingBackend {
  readonly firstLines: string[] = [];
  private readonly server: Server;

  private constructor(readonly name: string) {
    this.server = createServer((socket) => {
      let buffer = '';
      let seen = false;
      socket.on('data', (chunk) => {
        if (seen) {
          socket.write(`${name}:${chunk.toString('utf8')}`);
          return;
        }
        buffer += chunk.toString('utf8');
        const end = buffer.indexOf('\r\n');
        if (end < 0) return;
        seen = true;
        this.firstLines.push(buffer.slice(0, end));
        const rest = buffer.slice(end + 2);
        if (rest !== '') socket.write(`${name}:${rest}`);
      });
      socket.on('error', () => socket.destroy());
    });
  }

  static async start(name: string): Promise<HeaderRecordingBackend> {
    const backend = new HeaderRecordingBackend(name);
    await new Promise<void>((resolve) => backend.server.listen(0, '127.0.0.1', () => resolve()));
    return backend;
  }

  get port(): number {
    return (this.server.address() as { port: number }).port;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
