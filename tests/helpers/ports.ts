/** Loopback port blocks for one test file, checked free before use. */
import { createServer } from 'node:net';

function bindable(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/**
 * A block of `size` consecutive ports that nothing holds, below the kernel's range for outgoing
 * connections (32768 and up here), so no client socket takes one in the middle of a test.
 */
export async function freePortBlock(size: number): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt += 1) {
    const base = 20000 + Math.floor(Math.random() * (12000 - size));
    let free = true;
    for (let port = base; port < base + size && free; port += 1) {
      free = (await bindable(port, '0.0.0.0')) && (await bindable(port, '127.0.0.1'));
    }
    if (free) return base;
  }
  throw new Error(`no free block of ${size} ports found`);
}

/** Holds a port the way a foreign process would; close() releases it. */
export async function holdPort(port: number, host = '127.0.0.1'): Promise<{ close(): Promise<void> }> {
  const server = createServer((socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host, exclusive: true }, () => resolve());
  });
  return { close: () => new Promise((resolve) => server.close(() => resolve())) };
}
