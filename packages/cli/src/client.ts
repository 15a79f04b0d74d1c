/**
 * The daemon's v1 API as typed calls. Every failure becomes a ConductorError: the daemon's own
 * JSON error as it sent it, or DAEMON_UNREACHABLE naming the URL that was tried.
 */
import { request } from 'undici';
import { ConductorError, ErrorCode } from '@stream-conductor/shared';

export interface ClientOptions {
  url: string;
  token: string | undefined;
  /** How long to wait for an answer; applies can take a while when nginx retries a bind. */
  timeoutMs?: number;
}

const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'EPIPE']);

function errorCode(error: unknown): string | undefined {
  const own = (error as { code?: unknown }).code;
  if (typeof own === 'string' && own.startsWith('E')) return own;
  const cause = (error as { cause?: { code?: unknown } }).cause?.code;
  if (typeof cause === 'string') return cause;
  if (typeof own === 'string') return own;
  return undefined;
}

export class ApiClient {
  private readonly base: URL;

  constructor(private readonly options: ClientOptions) {
    this.base = new URL(options.url);
  }

  get url(): string {
    return this.base.origin;
  }

  async call<T>(method: 'GET' | 'POST' | 'DELETE' | 'PUT', path: string, body?: unknown): Promise<T> {
    const target = new URL(path, this.base);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.options.token !== undefined) headers.authorization = `Bearer ${this.options.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let response;
    try {
      response = await request(target, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        headersTimeout: this.options.timeoutMs ?? 120_000,
        bodyTimeout: this.options.timeoutMs ?? 120_000,
      });
    } catch (error) {
      const code = errorCode(error);
      if (code === undefined || UNREACHABLE.has(code) || code.startsWith('UND_ERR')) {
        throw new ConductorError(ErrorCode.DaemonUnreachable, `daemon not reachable at ${this.url} (${code ?? (error as Error).message})`, {
          hint: 'is it running? start it with `npm start`, or point --url / CONDUCTOR_URL at it',
          cause: error,
        });
      }
      throw error;
    }
    const text = await response.body.text();
    let data: unknown;
    try {
      data = text === '' ? undefined : JSON.parse(text);
    } catch {
      throw new ConductorError(ErrorCode.Internal, `the daemon at ${this.url} answered ${response.statusCode} with a body that is not JSON`);
    }
    if (response.statusCode >= 200 && response.statusCode < 300) return data as T;
    const error = ConductorError.fromBody(data);
    if (error) throw error;
    throw new ConductorError(ErrorCode.Internal, `the daemon at ${this.url} answered ${response.statusCode} for ${method} ${path}`);
  }
}
