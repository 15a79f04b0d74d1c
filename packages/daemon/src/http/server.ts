/**
 * The HTTP server around the express app, with the limits a long-running daemon on an edge host
 * needs: a client that sends its headers or body too slowly is cut off, headers are bounded, idle
 * keep-alive connections are closed, the number of open connections is bounded, and a connection
 * answered with an error by the server itself (400, 408, 431) is closed for good.
 *
 * Before the token is checked a client can hold a connection only for the headers timeout (or the
 * keep-alive timeout between requests); a request without the right token is answered 401 with
 * `Connection: close` (see auth.ts). The request timeout bounds only how long the request takes to
 * arrive, not the answer: a change that waits for nginx is not cut off by it.
 */
import { createServer, type RequestListener, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import type { SecureContextOptions } from 'node:tls';

/** HTTPS: the certificate, key and client CA as read (see config/tls.ts). */
export interface ServerTls {
  material: SecureContextOptions;
  /** Require a client certificate signed by `material.ca` (mutual TLS). */
  requireClientCert: boolean;
}

/**
 * Time a client has for its TLS handshake; as long as it has for its headers after it. Node's
 * default, 2 minutes, would let idle handshakes hold connections.
 */
export const HANDSHAKE_TIMEOUT_MS = 5_000;

export interface ServerLimits {
  /** Time allowed to receive the request headers. */
  headersTimeoutMs: number;
  /** Time allowed to receive the whole request (headers and body). */
  requestTimeoutMs: number;
  /** Idle time before a keep-alive connection is closed. */
  keepAliveTimeoutMs: number;
  /** Largest request head (request line and headers), in bytes. */
  maxHeaderSize: number;
  /** Most connections open at once; a connection beyond them is closed as it arrives. */
  maxConnections: number;
}

export const defaultLimits: ServerLimits = {
  headersTimeoutMs: 5_000,
  requestTimeoutMs: 20_000,
  keepAliveTimeoutMs: 5_000,
  maxHeaderSize: 16 * 1024,
  maxConnections: 512,
};

/** How long an error answer may take to leave before its connection is destroyed anyway. */
const FLUSH_MS = 1000;

/**
 * Sends `answer` and destroys the socket once it has left. end() alone only half-closes it: the
 * server allows half-open connections, so a client that never closes its side would keep the
 * socket (and its file descriptor) for good.
 */
function answerAndDestroy(socket: Duplex, answer: string): void {
  const timer = setTimeout(() => socket.destroy(), FLUSH_MS);
  timer.unref();
  socket.once('finish', () => {
    clearTimeout(timer);
    socket.destroy();
  });
  socket.once('close', () => clearTimeout(timer));
  socket.end(answer);
}

export function createHttpServer(app: RequestListener, limits: Partial<ServerLimits> = {}, tls?: ServerTls): Server {
  const { headersTimeoutMs, requestTimeoutMs, keepAliveTimeoutMs, maxHeaderSize, maxConnections } = {
    ...defaultLimits,
    ...limits,
  };
  const httpOptions = {
    maxHeaderSize,
    requestTimeout: requestTimeoutMs,
    headersTimeout: headersTimeoutMs,
    keepAliveTimeout: keepAliveTimeoutMs,
    // Node checks the two timeouts above on this interval; keep it below the shortest one.
    connectionsCheckingInterval: Math.min(1000, Math.ceil(headersTimeoutMs / 4)),
  };
  // An https.Server is an http.Server (its requests, limits and events are the same) over TLS.
  const server: Server =
    tls === undefined
      ? createServer(httpOptions, app)
      : createHttpsServer(
          {
            ...httpOptions,
            ...tls.material,
            minVersion: 'TLSv1.2',
            handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
            requestCert: tls.requireClientCert,
            rejectUnauthorized: tls.requireClientCert,
          },
          app,
        );
  server.maxConnections = maxConnections;
  // Requests node's parser refuses (bad bytes, heads over the limit, too slow) are answered as
  // JSON too, and their connection destroyed.
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
    // An answer already under way on this connection cannot be followed by another one. (Node's own
    // handler makes the same check; _httpMessage is the response being written, if any.)
    const current = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
    if (!socket.writable || current?.headersSent === true || (error.code === 'ECONNRESET' && socket.destroyed)) {
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
    answerAndDestroy(
      socket,
      `HTTP/1.1 ${status} ${text}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
  return server;
}
