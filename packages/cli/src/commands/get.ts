import {
  describeStreamBackends,
  formatDuration,
  formatPorts,
  formatRate,
  type StreamStats,
  type StreamView,
} from '@stream-conductor/shared';
import type { ApiClient } from '../client.js';
import { bytes, safeForTerminal } from '../format.js';
import type { Output } from '../output.js';
import { printData } from '../output-formats.js';
import { tlsRows } from './tls.js';

/** `port`: a port (one inside a range finds the range), or a range as FIRST-LAST; with its traffic when `stats`. */
export async function getStream(client: ApiClient, port: number | string, stats = false): Promise<StreamView> {
  return (await client.call<{ stream: StreamView }>('GET', `/v1/streams/${port}${stats ? '?stats=1' : ''}`)).stream;
}

/** `get --stats`: the port's sessions and bytes, and each route's on a port that routes by server name. */
function statsRows(stats: StreamStats): Array<[string, string]> {
  const refused = [
    stats.deniedSessions > 0 ? `${stats.deniedSessions} denied` : '',
    stats.limitedSessions > 0 ? `${stats.limitedSessions} limited` : '',
  ].filter((part) => part !== '');
  const rows: Array<[string, string]> = [
    [
      'sessions',
      `${stats.sessions} finished (${[`${stats.failedSessions} failed`, ...refused].join(', ')}), ${stats.activeConnections} open`,
    ],
    ['traffic', `${bytes(stats.bytesIn)} in, ${bytes(stats.bytesOut)} out`],
  ];
  for (const route of stats.routes ?? [])
    rows.push([
      'route',
      `${route.route}: ${route.sessions} finished (${route.failedSessions} failed), ${bytes(route.bytesIn)} in, ${bytes(route.bytesOut)} out`,
    ]);
  return rows;
}

export function printStream(answer: StreamView, output: Output): void {
  if (printData(output, answer, () => [answer.port])) return;
  const stream = safeForTerminal(answer);
  const { color } = output;
  const rows: Array<[string, string]> = [
    ['port', formatPorts(stream)],
    [
      'state',
      stream.state === 'live'
        ? color.green('live')
        : stream.state === 'draining'
          ? `${color.yellow('draining')}: ${stream.openSessions ?? '?'} session(s) open, removed at ${stream.drainingUntil ?? '?'} at the latest`
          : stream.state === 'removing'
            ? `${color.yellow('removing')}: ${stream.reason ?? ''}`
            : `${color.red('failed')}: ${stream.reason ?? ''}`,
    ],
    ['protocol', stream.protocol],
    ['backends', describeStreamBackends(stream)],
    ['balance', stream.balance],
    ['allow', stream.allow.length === 0 ? 'everyone' : stream.allow.join(', ')],
  ];
  if (stream.connectTimeoutMs !== undefined) rows.push(['connect timeout', formatDuration(stream.connectTimeoutMs)]);
  if (stream.idleTimeoutMs !== undefined) rows.push(['idle timeout', formatDuration(stream.idleTimeoutMs)]);
  if (stream.proxyProtocol) rows.push(['proxy protocol', 'on']);
  if (stream.profile !== undefined) rows.push(['profile', stream.profile]);
  if (stream.listenAddress !== undefined) rows.push(['listen address', stream.listenAddress]);
  if (stream.maxConnections !== undefined) rows.push(['max connections', String(stream.maxConnections)]);
  if (stream.maxConnectionsPerClient !== undefined)
    rows.push(['max per client', String(stream.maxConnectionsPerClient)]);
  if (stream.uploadRate !== undefined) rows.push(['upload rate', `${formatRate(stream.uploadRate)} per session`]);
  if (stream.downloadRate !== undefined) rows.push(['download rate', `${formatRate(stream.downloadRate)} per session`]);
  rows.push(...tlsRows(stream));
  const labels = Object.entries(stream.labels);
  if (labels.length > 0) rows.push(['labels', labels.map(([key, value]) => `${key}=${value}`).join(', ')]);
  if (stream.description !== undefined) rows.push(['description', stream.description]);
  rows.push(['expires', stream.expiresAt ?? 'never'], ['created', stream.createdAt]);
  if (stream.updatedAt !== undefined) rows.push(['updated', stream.updatedAt]);
  if (stream.stats !== undefined) rows.push(...statsRows(stream.stats));
  for (const host of stream.hosts ?? []) {
    const state =
      host.state === 'live'
        ? color.green('live')
        : host.state === 'failed'
          ? `${color.red('failed')}: ${host.reason ?? ''}`
          : host.state === 'draining'
            ? `${color.yellow('draining')}: ${host.openSessions ?? '?'} session(s) open`
            : host.state === 'drained'
              ? 'drained'
              : color.yellow('pending');
    rows.push([`host ${host.host}`, state]);
  }
  output.out(rows.map(([key, value]) => `${`${key}:`.padEnd(17)}${value}`).join('\n'));
}
