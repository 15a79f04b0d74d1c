import type { DaemonStatus } from '@stream-conductor/shared';
import type { ApiClient } from '../client.js';
import type { Output } from '../output.js';

export function collectStatus(client: ApiClient): Promise<DaemonStatus> {
  return client.call<DaemonStatus>('GET', '/v1/status');
}

export function printStatus(status: DaemonStatus, output: Output, url: string): void {
  if (output.json) {
    output.out(JSON.stringify(status, null, 2));
    return;
  }
  const { color } = output;
  const nginx = status.nginx;
  const nginxState = nginx.state === 'running' ? color.green(nginx.state) : color.red(nginx.state);
  const size = status.portRange.end - status.portRange.start + 1;
  const masters = status.nginxInstances.length;
  const pids = status.nginxInstances.flatMap((instance) => (instance.pid === undefined ? [] : [instance.pid]));
  const where = masters > 1 ? ` (${masters} masters, pids ${pids.join(', ')})` : nginx.pid === undefined ? '' : ` (pid ${nginx.pid})`;
  const lines = [
    `daemon:     ${url} (version ${status.version}, ${status.mode} mode, up since ${status.startedAt})`,
    `nginx:      ${nginxState}${where}, ${nginx.restarts} restart${nginx.restarts === 1 ? '' : 's'}`,
  ];
  if (nginx.lastReload) {
    lines.push(`last apply: ${nginx.lastReload.at} ${nginx.lastReload.ok ? color.green('ok') : color.red(`failed: ${nginx.lastReload.message ?? ''}`)}`);
  }
  if (nginx.message) lines.push(`nginx says: ${nginx.message}`);
  for (const incident of nginx.incidents ?? []) lines.push(`incident:   ${incident.at} ${incident.message}`);
  lines.push(
    `ports:      ${status.portRange.start}-${status.portRange.end} (${size} ports, ${status.streams.total} used, ${size - status.streams.total} free)`,
    `streams:    ${status.streams.live} live, ${status.streams.failed} failed`,
  );
  for (const failed of status.failed) lines.push(`  ${color.red('failed')} ${failed.port} -> ${failed.backends}: ${failed.reason}`);
  for (const problem of status.problems) lines.push(`${color.yellow('problem:')}    ${problem}`);
  output.out(lines.join('\n'));
}
