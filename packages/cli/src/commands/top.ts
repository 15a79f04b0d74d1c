/**
 * `conductor top`: the streams with their traffic rates, open connections and backend health,
 * refreshed in place until q or Ctrl-C. Rates are the difference of the byte counters between
 * two refreshes, divided by the time between them.
 *
 * On a terminal it draws on the alternate screen and gives the screen back as it was on exit;
 * into a pipe it prints one table per refresh (or, with --json, one JSON object per line).
 */
import { describeBackends, type StreamView } from '@stream-conductor/shared';
import type { ApiClient } from '../client.js';
import { bytes, rate, safeForTerminal } from '../format.js';
import type { Output } from '../output.js';
import { HOME_AND_CLEAR, isQuitKey, StopSwitch, takeTerminal } from '../terminal.js';
import { healthSummary, listStreams, newTable } from './ls.js';

export type SortKey = 'port' | 'rate' | 'active';
export const SORT_KEYS: SortKey[] = ['port', 'rate', 'active'];

export interface TopOptions {
  intervalMs: number;
  labels: string[];
  sort: SortKey;
  /** Stop after this many refreshes (for scripts); until q or a signal otherwise. */
  iterations?: number;
}

export interface StreamRates {
  port: number;
  /** Bytes per second from clients and to them; undefined on the first refresh. */
  inPerSecond?: number;
  outPerSecond?: number;
}

interface Sample {
  at: number;
  counters: Map<number, { bytesIn: number; bytesOut: number; sessions: number }>;
}

/** Rates of each stream between two samples. A counter that went down (a stream made anew) restarts. */
export function ratesBetween(previous: Sample | undefined, current: Sample): Map<number, StreamRates> {
  const rates = new Map<number, StreamRates>();
  const seconds = previous === undefined ? 0 : (current.at - previous.at) / 1000;
  for (const [port, now] of current.counters) {
    const before = previous?.counters.get(port);
    if (before === undefined || seconds <= 0) {
      rates.set(port, { port });
      continue;
    }
    const delta = (a: number, b: number): number => (a >= b ? a - b : a);
    rates.set(port, {
      port,
      inPerSecond: delta(now.bytesIn, before.bytesIn) / seconds,
      outPerSecond: delta(now.bytesOut, before.bytesOut) / seconds,
    });
  }
  return rates;
}

function sampleOf(streams: StreamView[], at: number): Sample {
  const counters = new Map<number, { bytesIn: number; bytesOut: number; sessions: number }>();
  for (const stream of streams) {
    counters.set(stream.port, {
      bytesIn: stream.stats?.bytesIn ?? 0,
      bytesOut: stream.stats?.bytesOut ?? 0,
      sessions: stream.stats?.sessions ?? 0,
    });
  }
  return { at, counters };
}

function sorted(streams: StreamView[], rates: Map<number, StreamRates>, key: SortKey): StreamView[] {
  const total = (stream: StreamView): number =>
    (rates.get(stream.port)?.inPerSecond ?? 0) + (rates.get(stream.port)?.outPerSecond ?? 0);
  const copy = [...streams];
  if (key === 'rate') copy.sort((a, b) => total(b) - total(a) || a.port - b.port);
  else if (key === 'active')
    copy.sort((a, b) => (b.stats?.activeConnections ?? 0) - (a.stats?.activeConnections ?? 0) || a.port - b.port);
  else copy.sort((a, b) => a.port - b.port);
  return copy;
}

export interface Frame {
  streams: StreamView[];
  rates: Map<number, StreamRates>;
  at: Date;
  error?: string;
}

/** One screen: a summary line, then the table, cut to `rows` lines when given. */
export async function renderFrame(
  frame: Frame,
  output: Output,
  options: { url: string; sort: SortKey; intervalMs: number; rows?: number; live: boolean },
): Promise<string> {
  const { color } = output;
  const streams = safeForTerminal(frame.streams);
  let totalIn = 0;
  let totalOut = 0;
  let active = 0;
  for (const stream of streams) {
    totalIn += frame.rates.get(stream.port)?.inPerSecond ?? 0;
    totalOut += frame.rates.get(stream.port)?.outPerSecond ?? 0;
    active += stream.stats?.activeConnections ?? 0;
  }
  const time = frame.at.toISOString().slice(11, 19);
  const keys = options.live ? '; q quits, s sorts' : '';
  const lines = [
    `${color.bold('conductor top')}  ${options.url}  ${time} UTC  every ${options.intervalMs / 1000}s, sorted by ${options.sort}${keys}`,
    `${streams.length} stream${streams.length === 1 ? '' : 's'}, ${active} open connection${active === 1 ? '' : 's'}, in ${rate(totalIn)}, out ${rate(totalOut)}`,
  ];
  if (frame.error !== undefined)
    lines.push(color.red(`daemon not answering: ${frame.error} (showing the last figures)`));
  const table = await newTable(
    ['PORT', 'PROTO', 'BACKENDS', 'ACTIVE', 'IN/s', 'OUT/s', 'SESSIONS', 'FAILED', 'LIMITED', 'IN', 'OUT', 'HEALTH'],
    color,
  );
  const shown = sorted(streams, frame.rates, options.sort);
  // Two summary lines, the table's top border, head and bottom border.
  const room = options.rows === undefined ? shown.length : Math.max(1, options.rows - lines.length - 5);
  for (const stream of shown.slice(0, room)) {
    const rates = frame.rates.get(stream.port);
    const stats = stream.stats;
    table.push([
      stream.state === 'live' ? String(stream.port) : color.red(`${stream.port} (${stream.state})`),
      stream.protocol,
      describeBackends(stream.backends),
      String(stats?.activeConnections ?? 0),
      rates?.inPerSecond === undefined ? '-' : rate(rates.inPerSecond),
      rates?.outPerSecond === undefined ? '-' : rate(rates.outPerSecond),
      String(stats?.sessions ?? 0),
      stats !== undefined && stats.failedSessions > 0 ? color.red(String(stats.failedSessions)) : '0',
      stats !== undefined && stats.limitedSessions > 0 ? color.yellow(String(stats.limitedSessions)) : '0',
      bytes(stats?.bytesIn ?? 0),
      bytes(stats?.bytesOut ?? 0),
      healthSummary(stats, color),
    ]);
  }
  lines.push(streams.length === 0 ? color.dim('no streams') : table.toString());
  if (shown.length > room)
    lines.push(color.dim(`... and ${shown.length - room} more (a taller terminal, or --label, shows them)`));
  return lines.join('\n');
}

/** Answers with the frame's streams and rates as JSON, for `top --json`. */
function jsonFrame(frame: Frame): string {
  return JSON.stringify({
    at: frame.at.toISOString(),
    streams: frame.streams.map((stream) => ({
      port: stream.port,
      protocol: stream.protocol,
      state: stream.state,
      backends: describeBackends(stream.backends),
      inPerSecond: frame.rates.get(stream.port)?.inPerSecond ?? null,
      outPerSecond: frame.rates.get(stream.port)?.outPerSecond ?? null,
      stats: stream.stats,
    })),
  });
}

export async function runTop(
  client: ApiClient,
  output: Output,
  options: TopOptions,
  io: { stdin?: NodeJS.ReadStream; stdout?: NodeJS.WriteStream } = {},
): Promise<void> {
  const stdin = io.stdin ?? process.stdin;
  const stdout = io.stdout ?? process.stdout;
  const live = stdout.isTTY === true && !output.json;
  let sort = options.sort;

  // The first look fails like any command: a daemon that is not there is exit code 3.
  let streams = await listStreams(client, options.labels, true);

  // Settles on q, Ctrl-C or a signal: a wait or a request in flight is not waited for.
  const run = new StopSwitch();
  const { stop, quitting } = run;

  let last: Frame | undefined;
  const draw = async (): Promise<void> => {
    if (!last || run.stopped) return;
    if (output.json) {
      stdout.write(`${jsonFrame(last)}\n`);
      return;
    }
    const text = await renderFrame(last, output, {
      url: client.url,
      sort,
      intervalMs: options.intervalMs,
      rows: live && stdout.rows > 0 ? stdout.rows : undefined,
      live,
    });
    if (!run.stopped) stdout.write(live ? `${HOME_AND_CLEAR}${text}\n` : `${text}\n\n`);
  };

  const keys = (key: string): void => {
    if (isQuitKey(key)) stop();
    else if (key === 's' || key === 'S') {
      sort = SORT_KEYS[(SORT_KEYS.indexOf(sort) + 1) % SORT_KEYS.length] ?? 'port';
      void draw();
    }
  };
  const onResize = (): void => void draw();

  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  const giveBack = live ? takeTerminal(stdin, stdout, keys, onResize) : undefined;
  try {
    let previous: Sample | undefined;
    for (let count = 1; !run.stopped; count += 1) {
      const at = Date.now();
      const sample = sampleOf(streams, at);
      last = { streams, rates: ratesBetween(previous, sample), at: new Date(at) };
      previous = sample;
      await draw();
      if (options.iterations !== undefined && count >= options.iterations) break;
      for (;;) {
        await run.pause(options.intervalMs);
        if (run.stopped) break;
        try {
          const answer = await Promise.race([listStreams(client, options.labels, true), quitting]);
          if (answer !== 'quit') streams = answer;
          break;
        } catch (error) {
          // The daemon went away (restarting, perhaps): say so over the last figures and keep trying.
          last = { ...last, at: new Date(), error: (error as Error).message };
          await draw();
        }
      }
    }
  } finally {
    stop();
    client.close();
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    giveBack?.();
  }
}
