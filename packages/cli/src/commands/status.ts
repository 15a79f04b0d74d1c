import type { DaemonStatus } from '@stream-conductor/shared';
import type { ApiClient } from '../client.js';
import { ago, duration, safeForTerminal } from '../format.js';
import type { Output } from '../output.js';
import { printData } from '../output-formats.js';

export function collectStatus(client: ApiClient): Promise<DaemonStatus> {
  return client.call<DaemonStatus>('GET', '/v1/status');
}

export function printStatus(answer: DaemonStatus, output: Output, url: string, now = new Date()): void {
  if (printData(output, answer)) return;
  const status = safeForTerminal(answer);
  const { color } = output;
  const nginx = status.nginx;
  const nginxState = nginx.state === 'running' ? color.green(nginx.state) : color.red(nginx.state);
  const size = status.portRange.end - status.portRange.start + 1;
  const masters = status.nginxInstances.length;
  const pids = status.nginxInstances.flatMap((instance) => (instance.pid === undefined ? [] : [instance.pid]));
  const where =
    masters > 1
      ? ` (${masters} masters, pids ${pids.join(', ')})`
      : nginx.pid === undefined
        ? ''
        : ` (pid ${nginx.pid})`;
  const workers = status.nginxInstances.reduce((sum, instance) => sum + (instance.workers ?? 0), 0);
  const draining = status.nginxInstances.reduce((sum, instance) => sum + (instance.drainingWorkers ?? 0), 0);
  const started = status.nginxInstances.flatMap((instance) =>
    instance.startedAt === undefined ? [] : [Date.parse(instance.startedAt)],
  );
  const uptime = started.length > 0 ? `, up ${duration((now.getTime() - Math.min(...started)) / 1000)}` : '';
  const lines = [
    `daemon:     ${url} (version ${status.version}, ${status.mode} mode, up ${duration((now.getTime() - Date.parse(status.startedAt)) / 1000)})`,
    `nginx:      ${nginxState}${where}, ${nginx.restarts} restart${nginx.restarts === 1 ? '' : 's'}${uptime}`,
    `workers:    ${workers} serving, ${draining} old one${draining === 1 ? '' : 's'} draining sessions`,
  ];
  if (nginx.lastReload) {
    const result = nginx.lastReload.ok ? color.green('ok') : color.red(`failed: ${nginx.lastReload.message ?? ''}`);
    lines.push(`last apply: ${nginx.lastReload.at} (${ago(nginx.lastReload.at, now)}) ${result}`);
  }
  if (nginx.message) lines.push(`nginx says: ${nginx.message}`);
  const audit = nginx.audit;
  if (audit) {
    const problems = [
      audit.missing.length > 0 ? `not serving ${audit.missing.join(', ')}` : '',
      audit.extra.length > 0 ? `serving ${audit.extra.join(', ')} that no stream has` : '',
      audit.strays > 0
        ? `${audit.strays} stray process${audit.strays === 1 ? '' : 'es'} holding ports (being ended)`
        : '',
      audit.workers === 0 && status.streams.live > 0 ? 'no nginx worker takes connections (being restarted)' : '',
    ].filter((problem) => problem !== '');
    const verdict = audit.inLine
      ? color.green('kernel sockets match the streams')
      : color.red(`OUT OF LINE: ${problems.join('; ')}`);
    const ended =
      audit.straysEnded > 0
        ? `, ${audit.straysEnded} stray${audit.straysEnded === 1 ? '' : 's'} ended since start`
        : '';
    lines.push(`audit:      ${verdict} (checked ${ago(audit.at, now)}${ended})`);
  }
  for (const incident of nginx.incidents ?? []) lines.push(`incident:   ${incident.at} ${incident.message}`);
  lines.push(
    `ports:      ${status.portRange.start}-${status.portRange.end} (${size} ports, ${status.streams.total} used, ${size - status.streams.total} free)`,
    `streams:    ${status.streams.live} live, ${status.streams.failed} failed${status.streams.draining ? `, ${status.streams.draining} draining` : ''}${status.streams.removing ? `, ${status.streams.removing} removing` : ''}`,
  );
  const store = status.store;
  if (store?.kind === 'etcd') {
    const state = store.state === 'connected' ? color.green('connected') : color.red('unreachable');
    const since = store.since === undefined ? '' : ` since ${store.since} (${ago(store.since, now)})`;
    lines.push(
      `store:      etcd ${(store.endpoints ?? []).join(',')} ${state}${since}, prefix ${store.prefix ?? '/'}, this host ${store.hostId ?? '?'}`,
    );
    if (store.state !== 'connected')
      lines.push(`            ${store.message ?? ''}; serving what this host has, changes refused until etcd answers`);
  }
  for (const host of status.hosts ?? []) {
    const counts = `${host.live} live, ${host.failed > 0 ? color.red(`${host.failed} failed`) : '0 failed'}, ${host.pending} pending${host.draining > 0 ? `, ${host.draining} draining` : ''}`;
    lines.push(`host:       ${host.id} ${host.api} (version ${host.version}, up since ${host.startedAt}): ${counts}`);
  }
  for (const failed of status.failed)
    lines.push(`  ${color.red('failed')} ${failed.port} -> ${failed.backends}: ${failed.reason}`);
  for (const problem of status.problems) lines.push(`${color.yellow('problem:')}    ${problem}`);
  output.out(lines.join('\n'));
}
