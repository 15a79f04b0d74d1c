/** The daemon's status: this host's streams and nginx masters, summed up as one answer. */
import {
  type DaemonStatus,
  describeBackends,
  type NginxMode,
  type NginxStatus,
  type PortRange,
  type StreamView,
} from '@stream-conductor/shared';
import type { ServiceInstance } from './placement.js';

/** The status of several masters as one: the worst state, the sums, the newest events. */
export function aggregateNginx(statuses: NginxStatus[]): NginxStatus {
  const first = statuses[0];
  if (statuses.length === 1 && first) return first;
  const state = statuses.some((status) => status.state === 'down')
    ? 'down'
    : statuses.some((status) => status.state === 'starting')
      ? 'starting'
      : 'running';
  const result: NginxStatus = { state, restarts: statuses.reduce((sum, status) => sum + status.restarts, 0) };
  if (first?.pid !== undefined) result.pid = first.pid;
  const reloads = statuses
    .flatMap((status) => (status.lastReload ? [status.lastReload] : []))
    .sort((a, b) => a.at.localeCompare(b.at));
  const last = reloads[reloads.length - 1];
  if (last) result.lastReload = last;
  const messages = statuses.flatMap((status, id) => (status.message ? [`nginx ${id}: ${status.message}`] : []));
  if (messages.length > 0) result.message = messages.join('; ');
  const incidents = statuses
    .flatMap((status, id) =>
      (status.incidents ?? []).map((incident) => ({ at: incident.at, message: `nginx ${id}: ${incident.message}` })),
    )
    .sort((a, b) => a.at.localeCompare(b.at))
    .slice(-20);
  if (incidents.length > 0) result.incidents = incidents;
  const audit = aggregateAudit(statuses);
  if (audit) result.audit = audit;
  return result;
}

function aggregateAudit(statuses: NginxStatus[]): NginxStatus['audit'] {
  const audits = statuses.flatMap((status) => (status.audit ? [status.audit] : []));
  if (audits.length === 0) return undefined;
  return {
    at: audits.map((audit) => audit.at).sort()[0] ?? '',
    inLine: audits.every((audit) => audit.inLine),
    missing: audits.flatMap((audit) => audit.missing).sort((a, b) => a - b),
    extra: audits.flatMap((audit) => audit.extra).sort((a, b) => a - b),
    workers: audits.reduce((sum, audit) => sum + audit.workers, 0),
    strays: audits.reduce((sum, audit) => sum + audit.strays, 0),
    straysEnded: audits.reduce((sum, audit) => sum + audit.straysEnded, 0),
  };
}

export interface StatusParts {
  version: string;
  mode: NginxMode;
  portRange: PortRange;
  /** Every stream this host holds, sorted by port. */
  streams: StreamView[];
  instances: readonly ServiceInstance[];
  problems: readonly string[];
  startedAt: string;
}

export function daemonStatus(parts: StatusParts): DaemonStatus {
  const { streams } = parts;
  const failed = streams.filter((stream) => stream.state === 'failed');
  const draining = streams.filter((stream) => stream.state === 'draining').length;
  const instances = parts.instances.map((instance) => ({
    ...instance.status(),
    id: instance.id,
    streams: instance.list().length,
  }));
  return {
    version: parts.version,
    mode: parts.mode,
    portRange: { ...parts.portRange },
    streams: {
      total: streams.length,
      live: streams.length - failed.length - draining,
      failed: failed.length,
      ...(draining > 0 ? { draining } : {}),
    },
    nginx: aggregateNginx(instances),
    nginxInstances: instances,
    failed: failed.map((stream) => ({
      port: stream.port,
      backends: describeBackends(stream.backends),
      reason: stream.reason ?? 'unknown',
    })),
    problems: [...parts.problems],
    startedAt: parts.startedAt,
  };
}
