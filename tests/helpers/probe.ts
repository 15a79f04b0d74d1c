/**
 * One new connection to a port, classified by what the kernel and the far end did with it:
 * refused by the kernel (nothing listens), carried to a named backend (an EchoBackend answers
 * `<name>:<bytes>`), accepted and then reset or closed without a byte, or nothing in time.
 * A connection that completes the handshake is never "refused", whatever happens after.
 */
import { connect } from 'node:net';

export type Outcome =
  | { kind: 'refused' }
  | { kind: 'backend'; name: string }
  | { kind: 'reset'; detail: string }
  | { kind: 'timeout'; detail: string }
  | { kind: 'error'; detail: string };

/** A short text for an outcome: `refused`, `backend A`, `reset (ECONNRESET)`, ... */
export function describeOutcome(outcome: Outcome): string {
  switch (outcome.kind) {
    case 'refused':
      return 'refused';
    case 'backend':
      return `backend ${outcome.name}`;
    default:
      return `${outcome.kind} (${outcome.detail})`;
  }
}

/** Connects to `port`, sends a line and resolves with what happened; never rejects. */
export function probe(port: number, options: { host?: string; timeoutMs?: number } = {}): Promise<Outcome> {
  const timeoutMs = options.timeoutMs ?? 3000;
  return new Promise((resolve) => {
    const socket = connect({ port, host: options.host ?? '127.0.0.1' });
    let connected = false;
    let answer = '';
    let settled = false;
    const settle = (outcome: Outcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(outcome);
    };
    const timer = setTimeout(
      () =>
        settle({
          kind: 'timeout',
          detail: `${connected ? 'accepted' : 'not connected'} after ${timeoutMs} ms, got ${JSON.stringify(answer)}`,
        }),
      timeoutMs,
    );
    socket.on('connect', () => {
      connected = true;
      socket.write('who\n');
    });
    socket.on('data', (chunk: Buffer) => {
      answer += chunk.toString('utf8');
      const colon = answer.indexOf(':');
      if (colon >= 0) settle({ kind: 'backend', name: answer.slice(0, colon) });
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (!connected && error.code === 'ECONNREFUSED') settle({ kind: 'refused' });
      // A reset before the 'connect' event still means the handshake completed (a port nothing
      // listens on answers the SYN with a reset, which is ECONNREFUSED).
      else if (error.code === 'ECONNRESET' || error.code === 'EPIPE')
        settle({ kind: 'reset', detail: `${connected ? 'accepted, then ' : 'handshake, then '}${error.code}` });
      else settle({ kind: 'error', detail: `${connected ? 'accepted, then ' : ''}${error.code ?? error.message}` });
    });
    socket.on('end', () => settle({ kind: 'reset', detail: `accepted, then closed after ${JSON.stringify(answer)}` }));
    socket.on('close', () =>
      settle({ kind: 'reset', detail: `${connected ? 'accepted, then ' : ''}closed after ${JSON.stringify(answer)}` }),
    );
  });
}
