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
  return server;
}
