import {
  describeStreamBackends,
  formatPorts,
  formatRate,
  type StreamStats,
  type StreamView,
} from '@stream-conductor/shared';
import type { ApiClient } from '../client.js';
import { ago, bytes, safeForTerminal } from '../format.js';
import type { Output } from '../output.js';
import { printData } from '../output-formats.js';
import { tlsSummary } from './tls.js';

export async function listStreams(client: ApiClient, labels: string[], stats = false): Promise<StreamView[]> {
  const params = labels.map((label) => `label=${encodeURIComponent(label)}`);
  if (stats) params.push('stats=1');
  return (
    await client.call<{ streams: StreamView[] }>('GET', `/v1/streams${params.length > 0 ? `?${params.join('&')}` : ''}`)
  ).streams;
}

const short = (time: string): string => time.replace(/\.[0-9]+Z$/, 'Z');

type Color = Output['color'];

/** The backends' health in a few characters: up, down, 1/2 up, or ? while not probed. */
export function healthSummary(stats: StreamStats | undefined, color: Color): string {
  const backends = stats?.backends ?? [];
  const probed = backends.filter((backend) => backend.state !== 'unknown');
  if (backends.length === 0 || probed.length === 0) return color.dim('?');
  const up = probed.filter((backend) => backend.state === 'up').length;
  if (up === backends.length) return color.green('up');
  if (up === 0) return color.red('down');
  return color.yellow(`${up}/${backends.length} up`);
}

/** Fleet mode: on how many hosts a stream is live, and which are not. */
export function hostsSummary(stream: StreamView, color: Color): string {
  const hosts = stream.hosts ?? [];
  if (hosts.length === 0) return color.dim('-');
  const live = hosts.filter((host) => host.state === 'live').length;
  const others = hosts.filter((host) => host.state !== 'live').map((host) => `${host.host} ${host.state}`);
  const count = `${live}/${hosts.length}`;
  return others.length === 0 ? color.green(count) : `${color.yellow(count)} (${others.join(', ')})`;
}

/** Loaded only when a table is printed: `ls --json` in a script should not pay for it. */
export async function newTable(
  head: string[],
  color: Color,
): Promise<{ push(row: string[]): void; toString(): string }> {
  const { default: Table } = await import('cli-table3');
  return new Table({
    head,
    style: { head: color.level > 0 ? ['bold'] : [], border: color.level > 0 ? ['grey'] : [] },
    chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
  });
}

export interface ListingOptions {
  stats?: boolean;
  now?: Date;
}

/** `-o wide`: a stream's limits in one cell (sessions at once, per client, rates per session). */
export function limitsSummary(stream: StreamView): string {
  const parts: string[] = [];
  if (stream.maxConnections !== undefined) parts.push(`max ${stream.maxConnections}`);
  if (stream.maxConnectionsPerClient !== undefined) parts.push(`${stream.maxConnectionsPerClient}/client`);
  if (stream.uploadRate !== undefined) parts.push(`up ${formatRate(stream.uploadRate)}`);
  if (stream.downloadRate !== undefined) parts.push(`down ${formatRate(stream.downloadRate)}`);
  return parts.length === 0 ? '-' : parts.join(', ');
}

/**
 * The listing as a table: the columns of `ls`, `ls --stats`, or with `-o wide` the listen
 * address, balance, allow-list, limits and creation time as well. An empty listing is a table
 * with its head only.
 */
export async function listingTable(
  answer: StreamView[],
  output: Output,
  options: ListingOptions = {},
): Promise<string> {
  const streams = safeForTerminal(answer);
  const { color } = output;
  const now = options.now ?? new Date();
  const wide = output.format.name === 'wide';
  const withReasons = streams.some((stream) => stream.reason !== undefined);
  const fleet = streams.some((stream) => stream.hosts !== undefined);
  const statsHead = ['SESSIONS', 'FAILED', 'LIMITED', 'ACTIVE', 'IN', 'OUT', 'LAST SESSION', 'HEALTH'];
  const head = wide
    ? ['PORT', 'PROTO', 'LISTEN', 'BACKENDS', 'BALANCE', 'STATE', ...(fleet ? ['HOSTS'] : [])]
    : ['PORT', 'PROTO', 'BACKENDS', 'STATE', ...(fleet ? ['HOSTS'] : [])];
  if (wide) head.push('ALLOW', 'LIMITS', 'TLS', 'LABELS', 'CREATED', 'EXPIRES');
  if (options.stats) head.push(...statsHead);
  else if (!wide) head.push('EXPIRES', 'LABELS');
  if (withReasons) head.push('REASON');
  const table = await newTable(head, color);
  for (const stream of streams) {
    const state =
      stream.state === 'live'
        ? color.green(stream.state)
        : stream.state === 'draining'
          ? color.yellow(`draining (${stream.openSessions ?? '?'} open)`)
          : stream.state === 'removing'
            ? color.yellow('removing')
            : color.red(stream.state);
    const labels =
      Object.entries(stream.labels)
        .map(([key, value]) => `${key}=${value}`)
        .join(',') || '-';
    const expires = stream.expiresAt === undefined ? '-' : short(stream.expiresAt);
    const stats = stream.stats;
    const row = wide
      ? [
          formatPorts(stream),
          stream.protocol,
          stream.listenAddress ?? '-',
          describeStreamBackends(stream),
          stream.balance,
          state,
          ...(fleet ? [hostsSummary(stream, color)] : []),
          stream.allow.length === 0 ? 'everyone' : stream.allow.join(','),
          limitsSummary(stream),
          tlsSummary(stream),
          labels,
          short(stream.createdAt),
          expires,
        ]
      : [
          formatPorts(stream),
          stream.protocol,
          describeStreamBackends(stream),
          state,
          ...(fleet ? [hostsSummary(stream, color)] : []),
        ];
    if (options.stats)
      row.push(
        String(stats?.sessions ?? 0),
        stats !== undefined && stats.failedSessions + stats.deniedSessions > 0
          ? color.red(`${stats.failedSessions}${stats.deniedSessions > 0 ? ` +${stats.deniedSessions} denied` : ''}`)
          : '0',
        stats !== undefined && stats.limitedSessions > 0 ? color.yellow(String(stats.limitedSessions)) : '0',
        String(stats?.activeConnections ?? 0),
        bytes(stats?.bytesIn ?? 0),
        bytes(stats?.bytesOut ?? 0),
        stats?.lastSessionAt === undefined ? '-' : ago(stats.lastSessionAt, now),
        healthSummary(stats, color),
      );
    else if (!wide) row.push(expires, labels);
    if (withReasons) row.push(stream.reason ?? '');
    table.push(row);
  }
  return table.toString();
}

/** The listing in the chosen format: a table (or nothing and `no streams` on stderr), JSON, YAML, ports. */
export async function printStreams(answer: StreamView[], output: Output, options: ListingOptions = {}): Promise<void> {
  if (printData(output, answer, () => answer.map((stream) => stream.port))) return;
  if (answer.length === 0) {
    output.err('no streams');
    return;
  }
  output.out(await listingTable(answer, output, options));
}
