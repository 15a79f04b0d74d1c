/** Where output goes: data on stdout, everything else on stderr; colour only when asked for. */
import { Chalk, type ChalkInstance } from 'chalk';
import { type OutputFormat, TEXT } from './output-formats.js';

export interface Output {
  /** -o json (or --json). */
  json: boolean;
  /** The format -o chose (output-formats.ts); text when none was. */
  format: OutputFormat;
  color: ChalkInstance;
  /** Colour for stderr, decided on stderr's own terminal. */
  errColor: ChalkInstance;
  out(text: string): void;
  err(text: string): void;
}

export interface OutputOptions {
  json: boolean;
  format?: OutputFormat;
  /** false when --no-color was given. */
  color: boolean;
  env: NodeJS.ProcessEnv;
  stdout?: NodeJS.WriteStream;
  stderr?: NodeJS.WriteStream;
}

function level(stream: NodeJS.WriteStream, options: OutputOptions): 0 | 1 {
  if (!options.color || (options.env.NO_COLOR ?? '') !== '') return 0;
  if (options.env.FORCE_COLOR !== undefined && options.env.FORCE_COLOR !== '0') return 1;
  return stream.isTTY ? 1 : 0;
}

export function createOutput(options: OutputOptions): Output {
  const stdout = options.stdout ?? process.stdout;
  const stderr = options.stderr ?? process.stderr;
  let color: ChalkInstance | undefined;
  let errColor: ChalkInstance | undefined;
  return {
    json: options.json || options.format?.name === 'json',
    format: options.format ?? (options.json ? { ...TEXT, name: 'json' } : TEXT),
    // Made on first use: machine output never needs them.
    get color() {
      color ??= new Chalk({ level: level(stdout, options) });
      return color;
    },
    get errColor() {
      errColor ??= new Chalk({ level: level(stderr, options) });
      return errColor;
    },
    out: (text) => stdout.write(`${text}\n`),
    err: (text) => stderr.write(`${text}\n`),
  };
}
