/**
 * The daemon's v1 API as typed calls. Every failure becomes a ConductorError: the daemon's own
 * JSON error as it sent it, or DAEMON_UNREACHABLE naming the URL that was tried.
 *
 * It uses node:http rather than an HTTP client library: the CLI starts for every command, and
 * loading undici (or the global fetch, which loads it) costs about 100 ms on a small machine,
 * where node:http is already in Node's start-up snapshot.
 */
import { type ClientRequest, request as httpRequest } from 'node:http';
import { ConductorError, ErrorCode } from '@stream-conductor/shared';
import type { TlsClientOptions } from './transport.js';

export interface ClientOptions {
  url: string;
  token: string | undefined;
  /** How long to wait for an answer; applies can take a while when nginx retries a bind. */
  timeoutMs?: number;
  /** https: how the daemon is verified, and the client certificate (see transport.ts). */
  tls?: TlsClientOptions | undefined;
}

const UNREACHABLE = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ECONNRESET',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ETIMEDOUT',
  'EPIPE',
]);

interface RawAnswer {
  status: number;
  body: string;
}

export class ApiClient {
  private readonly base: URL;
  private readonly pending = new Set<ClientRequest>();

  constructor(private readonly options: ClientOptions) {
    this.base = new URL(options.url);
  }

  get url(): string {
    return this.base.origin;
  }

  private async send(
    method: string,
    target: URL,
    headers: Record<string, string>,
    body: string | undefined,
  ): Promise<RawAnswer> {
    // node:https drags in TLS and crypto, a good part of the start-up: only for https URLs.
    const https = target.protocol === 'https:';
    const request = https ? (await import('node:https')).request : httpRequest;
    const timeoutMs = this.options.timeoutMs ?? 120_000;
    const tls = https ? this.options.tls : undefined;
    return new Promise((resolve, reject) => {
      const outgoing = request(target, { method, headers, timeout: timeoutMs, ...tls }, (incoming) => {
        const chunks: Buffer[] = [];
        incoming.on('data', (chunk: Buffer) => chunks.push(chunk));
        incoming.on('end', () =>
          resolve({ status: incoming.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
        );
        incoming.on('error', reject);
      });
      outgoing.on('timeout', () => outgoing.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
      outgoing.on('error', reject);
      outgoing.on('close', () => this.pending.delete(outgoing));
      this.pending.add(outgoing);
      outgoing.end(body);
    });
  }

  /** Drops the requests still in flight (their calls fail): for a command that quits mid-wait. */
  close(): void {
    for (const outgoing of this.pending) outgoing.destroy();
    this.pending.clear();
  }

  async call<T>(method: 'GET' | 'POST' | 'DELETE' | 'PUT', path: string, body?: unknown): Promise<T> {
    const target = new URL(path, this.base);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.options.token !== undefined) headers.authorization = `Bearer ${this.options.token}`;
    const text = body === undefined ? undefined : JSON.stringify(body);
    if (text !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(Buffer.byteLength(text));
    }
    let answer: RawAnswer;
    try {
      answer = await this.send(method, target, headers, text);
    } catch (error) {
      const tlsProblem = tlsFailure(error, this.url);
      if (tlsProblem !== undefined) throw tlsProblem;
      // The request did not complete: refused, unresolvable, reset, or a TLS handshake that failed
      // (an https URL for a daemon that speaks plain HTTP). All of it means "not reachable there".
      const code = (error as NodeJS.ErrnoException).code;
      const reason =
        code !== undefined && (UNREACHABLE.has(code) || !code.startsWith('ERR_'))
          ? code
          : (error as Error).message.split('\n')[0];
      const reset = reason === 'ECONNRESET' && target.protocol === 'https:';
      throw new ConductorError(ErrorCode.DaemonUnreachable, `daemon not reachable at ${this.url} (${reason})`, {
        hint: reset
          ? 'is it running? is the URL its HTTPS port? A daemon that requires a client certificate resets a client without one it trusts: check --cert and --key'
          : 'is it running? start it with `npm start`, or point --url / CONDUCTOR_URL at it',
        cause: error,
      });
    }
    let data: unknown;
    try {
      data = answer.body === '' ? undefined : JSON.parse(answer.body);
    } catch {
      throw new ConductorError(
        ErrorCode.Internal,
        `the daemon at ${this.url} answered ${answer.status} with a body that is not JSON`,
      );
    }
    if (answer.status >= 200 && answer.status < 300) return data as T;
    const error = ConductorError.fromBody(data);
    if (error) throw error;
    throw new ConductorError(
      ErrorCode.Internal,
      `the daemon at ${this.url} answered ${answer.status} for ${method} ${path}`,
    );
  }
}

/** Certificate checks that failed on this side: the daemon was reached but could not be trusted. */
const UNVERIFIED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * A TLS handshake that failed as a DAEMON_UNREACHABLE error (exit 3) that names the cause: the
 * daemon's certificate could not be verified, or the daemon wants a client certificate.
 */
function tlsFailure(error: unknown, url: string): ConductorError | undefined {
  const code = (error as NodeJS.ErrnoException).code ?? '';
  const message = (error as Error).message.split('\n')[0];
  if (UNVERIFIED.has(code)) {
    return new ConductorError(
      ErrorCode.DaemonUnreachable,
      `cannot verify the certificate of the daemon at ${url} (${code}: ${message}); nothing was sent`,
      {
        hint: 'give the CA that signed it with --ca FILE (CONDUCTOR_CA); check that the URL names the host the certificate is for',
        cause: error,
      },
    );
  }
  if (/ALERT_(CERTIFICATE_REQUIRED|BAD_CERTIFICATE|UNKNOWN_CA|HANDSHAKE_FAILURE|CERTIFICATE_UNKNOWN)/.test(code)) {
    return new ConductorError(
      ErrorCode.DaemonUnreachable,
      `the daemon at ${url} refused the TLS handshake (${code}): it requires a client certificate it trusts`,
      {
        hint: 'give one with --cert FILE --key FILE (CONDUCTOR_CLIENT_CERT, CONDUCTOR_CLIENT_KEY)',
        cause: error,
      },
    );
  }
  return undefined;
}
