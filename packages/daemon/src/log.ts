/**
 * Structured logging: one JSON object per line on stderr (stdout is left alone). Fields are
 * plain values; errors are reduced to their message and code so no stack trace ends up in a log
 * line meant for machines.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

const levelRank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

export interface LogSink {
  write(line: string): unknown;
}

export function isLogLevel(value: string): value is LogLevel {
  return Object.hasOwn(levelRank, value);
}

function plain(value: unknown): unknown {
  if (value instanceof Error) {
    const code = (value as { code?: unknown }).code;
    return code === undefined ? value.message : { message: value.message, code };
  }
  return value;
}

export function createLogger(options: { level?: LogLevel; sink?: LogSink; base?: LogFields } = {}): Logger {
  const minimum = levelRank[options.level ?? 'info'];
  const sink = options.sink ?? process.stderr;
  const base = options.base ?? {};
  const emit = (level: LogLevel, msg: string, fields?: LogFields): void => {
    if (levelRank[level] < minimum) return;
    const record: LogFields = { time: new Date().toISOString(), level, msg, ...base };
    if (fields) for (const [key, value] of Object.entries(fields)) record[key] = plain(value);
    sink.write(`${JSON.stringify(record)}\n`);
  };
  return {
    debug: (msg, fields) => emit('debug', msg, fields),
    info: (msg, fields) => emit('info', msg, fields),
    warn: (msg, fields) => emit('warn', msg, fields),
    error: (msg, fields) => emit('error', msg, fields),
    child: (fields) => createLogger({ level: options.level ?? 'info', sink, base: { ...base, ...fields } }),
  };
}

/** A logger that drops everything (unit tests). */
export const silentLogger: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  child: () => silentLogger,
};

/**
 * Waits for work whose failure must not stop the caller (clean-up on an error path, a
 * shutdown step, a background refresh that the next round repeats) and logs what was dropped
 * instead of swallowing it. Returns undefined when the work failed.
 */
export async function bestEffort<T>(
  log: Logger,
  what: string,
  work: Promise<T> | (() => Promise<T>),
  level: 'debug' | 'warn' = 'debug',
): Promise<T | undefined> {
  try {
    return await (typeof work === 'function' ? work() : work);
  } catch (error) {
    log[level]('best-effort step failed', { what, error });
    return undefined;
  }
}

/**
 * The tail of a promise chain (a queue that runs one step after another): it settles when the
 * step does, whatever the outcome. The step's own promise, with its error, went to its caller;
 * the chain only needs to know it ended.
 */
export function settled(work: Promise<unknown>): Promise<void> {
  return work.then(
    () => undefined,
    () => undefined,
  );
}
