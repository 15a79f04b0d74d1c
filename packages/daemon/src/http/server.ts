/**
 * The HTTP server around the express app, with the limits a long-running daemon on an edge host
 * needs: a client that sends its headers or body too slowly is cut off, headers are bounded, idle
 * keep-alive connections are closed.
 */
import { type RequestListener, type Server, createServer } from 'node:http';

export interface ServerLimits {
  /** Time allowed to receive the request headers. */
  headersTimeoutMs: number;
  /** Time allowed to receive the whole request (headers and body). */
  requestTimeoutMs: number;
  /** Idle time before a keep-alive connection is closed. */
  keepAliveTimeoutMs: number;
  /** Largest request head (request line and headers), in bytes. */
  maxHeaderSize: number;
}

export const defaultLimits: ServerLimits = {
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  maxHeaderSize: 16 * 1024,
};

export function createHttpServer(app: RequestListener, limits: ServerLimits = defaultLimits): Server {
  const server = createServer(
    {
      maxHeaderSize: limits.maxHeaderSize,
      requestTimeout: limits.requestTimeoutMs,
      headersTimeout: limits.headersTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      // Node checks the two timeouts above on this interval; keep it below the shortest one.
      connectionsCheckingInterval: Math.min(1000, Math.ceil(limits.headersTimeoutMs / 4)),
    },
    app,
  );
  // Requests node's parser refuses (bad bytes, heads over the limit) are answered as JSON too.
  server.on('clientError', (error: NodeJS.ErrnoException, socket) => {
    if (!socket.writable || (error.code === 'ECONNRESET' && socket.destroyed)) {
      socket.destroy();
      return;
    }
    const large = error.code === 'HPE_HEADER_OVERFLOW';
    const timedOut = error.code === 'ERR_HTTP_REQUEST_TIMEOUT';
    const [status, text, code, message] = large
      ? [431, 'Request Header Fields Too Large', 'PAYLOAD_TOO_LARGE', 'the request head is too large']
      : timedOut
        ? [408, 'Request Timeout', 'INVALID_INPUT', 'the request took too long to arrive']
        : [400, 'Bad Request', 'INVALID_INPUT', 'the request is malformed'];
    const body = JSON.stringify({ error: { code, message } });
    socket.end(`HTTP/1.1 ${status} ${text}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  });
  return server;
}
