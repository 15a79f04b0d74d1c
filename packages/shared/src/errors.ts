/**
 * One error type for the whole project: a stable machine-readable `code`, a one-line message for
 * people, and an optional hint saying what to do about it. The daemon answers it as JSON; the CLI
 * turns that JSON back into the same error and maps the code to an exit status.
 */
export const ErrorCode = {
  /** A request or argument is malformed (not a port, not host:port, unknown field...). */
  InvalidInput: 'INVALID_INPUT',
  /** The port is a whole number but outside the daemon's PORT_RANGE. */
  PortOutOfRange: 'PORT_OUT_OF_RANGE',
  /** The daemon already has a stream on that port. */
  StreamExists: 'STREAM_EXISTS',
  /** Another process on the host holds the port. */
  PortInUse: 'PORT_IN_USE',
  /** Another request for the same port is being applied right now. */
  Conflict: 'CONFLICT',
  /** No stream on that port. */
  NotFound: 'NOT_FOUND',
  /** No free port left in PORT_RANGE. */
  NoFreePort: 'NO_FREE_PORT',
  /** nginx refused the configuration (`nginx -t` failed); nginx's own message is included. */
  NginxRejected: 'NGINX_REJECTED',
  /** nginx accepted the configuration but the reload did not take (bind failure, timeout...). */
  ReloadFailed: 'RELOAD_FAILED',
  /** nginx is not running or cannot be reached; nothing can be applied right now. */
  NginxUnavailable: 'NGINX_UNAVAILABLE',
  /** The daemon could not persist the change (disk full, read-only folder...). */
  StorageFailed: 'STORAGE_FAILED',
  /** The shared store of a fleet (etcd) cannot be reached: changes wait, serving goes on. */
  StoreUnavailable: 'STORE_UNAVAILABLE',
  /** Missing or wrong API token. */
  Unauthorized: 'UNAUTHORIZED',
  /** The token is right but its role does not allow the call (a read token asking for a change). */
  Forbidden: 'FORBIDDEN',
  /** The daemon is shutting down and takes no more changes. */
  ShuttingDown: 'SHUTTING_DOWN',
  /** Request body or headers too large, or similar transport-level refusal. */
  PayloadTooLarge: 'PAYLOAD_TOO_LARGE',
  /** No route for that method and path. */
  NoRoute: 'NO_ROUTE',
  /** The CLI could not reach the daemon. */
  DaemonUnreachable: 'DAEMON_UNREACHABLE',
  /** The CLI was called wrongly. */
  Usage: 'USAGE',
  /** A start-up setting is invalid: the daemon does not start. */
  BadConfig: 'BAD_CONFIG',
  /** The daemon's store file cannot be read as a store: the daemon does not start. */
  StoreCorrupt: 'STORE_CORRUPT',
  /** Another daemon already uses the same home or stream folder: this one does not start. */
  AlreadyRunning: 'ALREADY_RUNNING',
  /** The daemon does not do this in its current mode (say, a drain in fleet mode). */
  NotSupported: 'NOT_SUPPORTED',
  /** Anything unexpected: a bug. */
  Internal: 'INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const httpStatusByCode: Record<ErrorCode, number> = {
  INVALID_INPUT: 400,
  PORT_OUT_OF_RANGE: 400,
  STREAM_EXISTS: 409,
  PORT_IN_USE: 409,
  CONFLICT: 409,
  NOT_FOUND: 404,
  NO_FREE_PORT: 409,
  NGINX_REJECTED: 422,
  RELOAD_FAILED: 502,
  NGINX_UNAVAILABLE: 503,
  STORAGE_FAILED: 507,
  STORE_UNAVAILABLE: 503,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  SHUTTING_DOWN: 503,
  PAYLOAD_TOO_LARGE: 413,
  NO_ROUTE: 404,
  DAEMON_UNREACHABLE: 503,
  USAGE: 400,
  BAD_CONFIG: 500,
  STORE_CORRUPT: 500,
  ALREADY_RUNNING: 500,
  NOT_SUPPORTED: 501,
  INTERNAL: 500,
};

/** The HTTP status the daemon answers for an error code. */
export function httpStatusFor(code: ErrorCode): number {
  return httpStatusByCode[code];
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(httpStatusByCode, value);
}

/** The JSON body of every error answered by the v1 API. */
export interface ErrorBody {
  error: {
    code: ErrorCode;
    message: string;
    hint?: string;
  };
}

export interface ConductorErrorOptions {
  hint?: string | undefined;
  cause?: unknown;
}

export class ConductorError extends Error {
  // Typed string, not the literal, so that a subclass can name itself.
  override readonly name: string = 'ConductorError';
  readonly code: ErrorCode;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options: ConductorErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.hint = options.hint;
  }

  toBody(): ErrorBody {
    const error: ErrorBody['error'] = { code: this.code, message: this.message };
    if (this.hint !== undefined) error.hint = this.hint;
    return { error };
  }

  /** Rebuilds the error from a v1 error body; undefined when the value is not one. */
  static fromBody(body: unknown): ConductorError | undefined {
    if (typeof body !== 'object' || body === null) return undefined;
    const error = (body as { error?: unknown }).error;
    if (typeof error !== 'object' || error === null) return undefined;
    const { code, message, hint } = error as Record<string, unknown>;
    if (!isErrorCode(code) || typeof message !== 'string') return undefined;
    return new ConductorError(code, message, { hint: typeof hint === 'string' ? hint : undefined });
  }
}

export interface StartupErrorOptions extends ConductorErrorOptions {
  /** BadConfig unless told. */
  code?: ErrorCode;
}

/**
 * A reason the daemon cannot start: a bad setting, an unreadable store, another daemon on the same
 * folders. The daemon's entry point prints every one as the one line `line()` and exits; any other
 * error at start-up is a bug and prints its stack.
 */
export class StartupError extends ConductorError {
  override readonly name: string = 'StartupError';

  constructor(message: string, options: StartupErrorOptions = {}) {
    super(options.code ?? ErrorCode.BadConfig, message, options);
  }

  /** The message and its hint as one line: `<message>; <hint>`. */
  line(): string {
    return this.hint === undefined ? this.message : `${this.message}; ${this.hint}`;
  }
}
