/**
 * Structured logging on stderr (stdout is left alone): one JSON object per line for machines, or
 * one readable line per event for people at a terminal (`time LEVEL message key=value ...`).
 * Fields are plain values; errors are reduced to their message and code so no stack trace ends
 * up in a log line. In the readable form every value that is not a bare word is written as a
 * JSON string, so a value cannot forge a line or a field.
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

/** json: a JSON object per line; text: a line for people. */
export type LogFormat = 'json' | 'text';

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

const BARE = /^[A-Za-z0-9_.:/@+-]+$/;

/** A value in a readable line: a bare word as it is, anything else as JSON (quoted, escaped). */
function readable(value: unknown): string {
  if (typeof value === 'string') return BARE.test(value) ? value : JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value);
  return JSON.stringify(value) ?? String(value);
}

/** One readable line: `2026-12-05T08:00:00.000Z INFO  stream created port=9000 backend=db:5432`. */
export function textLine(record: LogFields): string {
  const { time, level, msg, ...fields } = record;
  const head = `${String(time)} ${String(level).toUpperCase().padEnd(5)} ${JSON.stringify(String(msg)).slice(1, -1)}`;
  const rest = Object.entries(fields).map(
    ([key, value]) => ` ${BARE.test(key) ? key : JSON.stringify(key)}=${readable(value)}`,
  );
  return `${head}${rest.join('')}`;
}

export function createLogger(
  options: { level?: LogLevel; format?: LogFormat; sink?: LogSink; base?: LogFields } = {},
): Logger {
  const minimum = levelRank[options.level ?? 'info'];
  const sink = options.sink ?? process.stderr;
  const base = options.base ?? {};
  const emit = (level: LogLevel, msg: string, fields?: LogFields): void => {
    if (levelRank[level] < minimum) return;
    const record: LogFields = { time: new Date().toISOString(), level, msg, ...base };
    if (fields) for (const [key, value] of Object.entries(fields)) record[key] = plain(value);
    sink.write(`${options.format === 'text' ? textLine(record) : JSON.stringify(record)}\n`);
  };
  return {
    debug: (msg, fields) => emit('debug', msg, fields),
    info: (msg, fields) => emit('info', msg, fields),
    warn: (msg, fields) => emit('warn', msg, fields),
    error: (msg, fields) => emit('error', msg, fields),
    child: (fields) => createLogger({ ...options, sink, base: { ...base, ...fields } }),
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
