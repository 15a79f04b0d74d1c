/**
 * `conductor ls --watch`: the listing, looked at again every --interval. On a terminal (table
 * or -o wide) it is redrawn in place on the alternate screen until q, Ctrl-C or a signal, and the
 * screen is given back as it was. Otherwise (a pipe, a file, or -o json|yaml|name) a new full
 * listing is printed each time it changes, not at each look: json as one line per listing, yaml
 * as one document (`---`) per listing, tables and names each followed by an empty line.
 *
 * A daemon that does not answer at the first look is the usual exit 3; one that stops answering
 * later is said on stderr (once) and asked again at each interval; a refusal (a wrong token) ends
 * the watch with its error (exit 1).
 */
import {
  ConductorError,
  ErrorCode,
  formatDuration,
  parseDuration,
  printable,
  type StreamView,
} from '@stream-conductor/shared';
import type { ApiClient } from '../client.js';
import type { Output } from '../output.js';
import { fitRows, HOME_AND_CLEAR, isQuitKey, StopSwitch, takeTerminal } from '../terminal.js';
import { listingTable, listStreams } from './ls.js';

export const WATCH_INTERVAL = { min: 500, max: 3_600_000, default: 2000 } as const;

/** --interval of ls --watch: a duration from 500ms to 1h. */
export function parseWatchInterval(text: string): number {
  let ms: number;
  try {
    ms = parseDuration(text, '--interval');
  } catch (error) {
    throw new ConductorError(ErrorCode.Usage, (error as Error).message);
  }
  if (ms < WATCH_INTERVAL.min || ms > WATCH_INTERVAL.max)
    throw new ConductorError(ErrorCode.Usage, `--interval: from 500ms to 1h, got ${JSON.stringify(text)}`);
  return ms;
}

/** The options of `ls`, as commander gives them. */
export interface LsOptions {
  label: string[];
  stats?: boolean;
  watch?: boolean;
  interval?: string;
}

/** The watch `ls` asks for, checked before anything is sent (exit 2 otherwise). */
export function watchOptions(options: LsOptions): Omit<WatchOptions, 'url'> {
  if (!options.watch) throw new ConductorError(ErrorCode.Usage, '--interval goes with --watch');
  const intervalMs = options.interval === undefined ? WATCH_INTERVAL.default : parseWatchInterval(options.interval);
  return { intervalMs, labels: options.label, stats: options.stats === true };
}

export interface WatchOptions {
  intervalMs: number;
  labels: string[];
  stats: boolean;
  /** The daemon's URL, for the header on a terminal. */
  url: string;
}

export interface WatchIo {
  stdin?: NodeJS.ReadStream;
  stdout?: NodeJS.WriteStream;
  /** Signals that end the watch (exit 0). */
  signals?: NodeJS.Signals[];
}

/**
 * One listing as a pipe gets it, in the chosen format, without its last newline. Tables and names
 * end with an empty line, so that a reader knows where a listing ends (an empty listing of names
 * is the empty line alone).
 */
export async function listingText(streams: StreamView[], output: Output, stats: boolean): Promise<string> {
  const { format } = output;
  if (format.name === 'json') return JSON.stringify(streams);
  if (format.name === 'yaml') return `---\n${format.serialize(streams)}`;
  if (format.name === 'name') return streams.map((stream) => `${stream.port}\n`).join('');
  return `${await listingTable(streams, output, { stats })}\n`;
}

/** What changes a listing: its data (times shown as "ago" are not data). */
const fingerprint = (streams: StreamView[]): string => JSON.stringify(streams);

export async function watchStreams(
  client: ApiClient,
  output: Output,
  options: WatchOptions,
  io: WatchIo = {},
): Promise<void> {
  const stdin = io.stdin ?? process.stdin;
  const stdout = io.stdout ?? process.stdout;
  const live = stdout.isTTY === true && (output.format.name === 'text' || output.format.name === 'wide');
  const look = (): Promise<StreamView[]> => listStreams(client, options.labels, options.stats);
  let streams: StreamView[] = [];
  // Settles on q, Ctrl-C or a signal: a wait or a request in flight is not waited for.
  const run = new StopSwitch();
  const { stop, quitting } = run;

  let unreachable: string | undefined;
  const draw = async (): Promise<void> => {
    if (run.stopped) return;
    const { color } = output;
    const time = new Date().toISOString().slice(11, 19);
    const lines = [
      `${color.bold('conductor ls --watch')}  ${options.url}  ${time} UTC  every ${formatDuration(options.intervalMs)}; q quits`,
    ];
    if (unreachable !== undefined) lines.push(color.red(`${unreachable}; still trying (showing the last listing)`));
    lines.push(streams.length === 0 ? color.dim('no streams') : await listingTable(streams, output, options));
    const rows = stdout.rows > 0 ? stdout.rows - 1 : undefined;
    const text = fitRows(lines.join('\n'), rows, (hidden) =>
      color.dim(`... ${hidden} more line(s): a taller terminal, or --label, shows them`),
    );
    if (!run.stopped) stdout.write(`${HOME_AND_CLEAR}${text}\n`);
  };

  const signals = io.signals ?? ['SIGINT', 'SIGTERM'];
  for (const signal of signals) process.on(signal, stop);
  let giveBack: (() => void) | undefined;
  try {
    // The first look fails like any command: a daemon that is not there is exit code 3.
    const first = await Promise.race([look(), quitting]);
    if (first === 'quit') return;
    streams = first;
    if (live)
      giveBack = takeTerminal(
        stdin,
        stdout,
        (key) => {
          if (isQuitKey(key)) stop();
        },
        () => void draw(),
      );
    let shown: string | undefined;
    for (;;) {
      if (live) await draw();
      else if (fingerprint(streams) !== shown) {
        const text = await listingText(streams, output, options.stats);
        if (run.stopped) break;
        output.out(text);
        shown = fingerprint(streams);
      }
      await run.pause(options.intervalMs);
      if (run.stopped) break;
      try {
        const answer = await Promise.race([look(), quitting]);
        if (answer === 'quit') break;
        streams = answer;
        if (unreachable !== undefined) output.err('conductor: the daemon answers again');
        unreachable = undefined;
      } catch (error) {
        // A daemon that went away (restarting, perhaps) is asked again; any other refusal ends the watch.
        if (run.stopped) break;
        if (!(error instanceof ConductorError && error.code === ErrorCode.DaemonUnreachable)) throw error;
        if (unreachable === undefined) output.err(`conductor: ${printable(error.message)}; still trying`);
        unreachable = printable(error.message);
      }
    }
  } finally {
    stop();
    client.close();
    for (const signal of signals) process.off(signal, stop);
    giveBack?.();
  }
}
