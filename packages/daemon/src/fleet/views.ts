/**
 * What the API shows of the fleet: each port's stream as this host runs it with the state of
 * every host, the list, and the daemon's status with the store and the hosts.
 */
import {
  type DaemonStatus,
  describeBackends,
  type FleetHost,
  type HostStreamState,
  type StreamRecord,
  type StreamView,
} from '@stream-conductor/shared';
import type { ListFilter } from '../service/service.js';
import { sameDefinition } from './definition.js';
import type { DesiredCache } from './desired.js';
import { newer } from './keys.js';
import type { LocalService } from './local.js';

export interface ViewsOptions {
  cache: DesiredCache;
  local: LocalService;
  hostId: string;
  /** Why this host failed to apply a port, if it did. */
  failures: ReadonlyMap<number, string>;
  /** Whether this host's own change in flight removes the port (see Convergence.removing). */
  removing?: (port: number) => boolean;
}

/** The store's part of the status. */
export interface StoreState {
  connected: boolean;
  since: string;
  lastError: string;
  endpoints: string[];
  prefix: string;
  problems: string[];
}

export class FleetViews {
  constructor(private readonly options: ViewsOptions) {}

  /** How each running host reports a port's stream as of the key's revision. */
  private hostStates(port: number, target: StreamRecord, revision: string): HostStreamState[] {
    const { cache, local, hostId, failures } = this.options;
    const states: HostStreamState[] = [];
    for (const id of [...cache.hosts.keys()].sort()) {
      if (id === hostId) {
        const here = local.get(port);
        const failure = failures.get(port);
        if (target.drainingUntil !== undefined && failure === undefined) {
          if (here?.state === 'draining')
            states.push({
              host: id,
              state: 'draining',
              ...(here.openSessions === undefined ? {} : { openSessions: here.openSessions }),
            });
          else if (here === undefined) states.push({ host: id, state: 'drained' });
          else states.push({ host: id, state: 'pending' });
        } else if (here?.state === 'live' && sameDefinition(here, target)) states.push({ host: id, state: 'live' });
        else if (failure !== undefined) states.push({ host: id, state: 'failed', reason: failure });
        else states.push({ host: id, state: 'pending' });
        continue;
      }
      const report = cache.applied.get(id)?.get(port);
      if (!report || newer(revision, report.revision)) states.push({ host: id, state: 'pending' });
      else
        states.push({
          host: id,
          state: report.state,
          ...(report.reason !== undefined ? { reason: report.reason } : {}),
          ...(report.openSessions !== undefined ? { openSessions: report.openSessions } : {}),
        });
    }
    return states;
  }

  /** The stream on `port`: keyed by it, or a range that holds it (as a single host shows it). */
  get(given: number): StreamView | undefined {
    const { cache, local, failures } = this.options;
    const port = cache.keyOf(given);
    const target = cache.effective(port);
    const here = local.get(target ? port : given);
    // A stream on its way out is never shown live: its ports may be closed already.
    if (!target) {
      if (!here) return undefined;
      // Before this host has read the fleet's set (etcd away since it started), it serves what it had.
      if (cache.seenRevision === '0')
        return { ...here, reason: here.reason ?? "the fleet's store has not been read yet", hosts: [] };
      const failure = failures.get(port);
      if (failure !== undefined) return { ...here, state: 'failed', reason: failure, hosts: [] };
      return { ...here, state: 'removing', reason: "not in the fleet's set: being removed", hosts: [] };
    }
    if (this.options.removing?.(port) === true) {
      const hosts = this.hostStates(port, target, cache.desired.get(port)?.modRevision ?? '0');
      return { ...(here ?? target), state: 'removing', reason: 'this host is removing it', hosts };
    }
    let view: StreamView;
    if (target.drainingUntil !== undefined) return this.drainingView(port, target, here);
    if (here && sameDefinition(here, target)) {
      view = { ...here, createdAt: target.createdAt };
      if (target.updatedAt !== undefined) view.updatedAt = target.updatedAt;
      else delete view.updatedAt;
    } else {
      view = { ...target, state: 'failed', reason: failures.get(port) ?? 'not applied on this host yet' };
    }
    view.hosts = this.hostStates(port, target, cache.desired.get(port)?.modRevision ?? '0');
    return view;
  }

  /**
   * A stream the fleet drains: as this host has it while it drains here, the fleet's record once
   * it drained here; its open sessions are those of every host, as each last reported them.
   */
  private drainingView(port: number, target: StreamRecord, here: StreamView | undefined): StreamView {
    const view: StreamView =
      here?.state === 'draining' ? { ...here, createdAt: target.createdAt } : { ...target, state: 'draining' };
    view.hosts = this.hostStates(port, target, this.options.cache.desired.get(port)?.modRevision ?? '0');
    const counts = view.hosts.flatMap((host) => (host.openSessions === undefined ? [] : [host.openSessions]));
    if (counts.length > 0) view.openSessions = counts.reduce((sum, count) => sum + count, 0);
    else delete view.openSessions;
    return view;
  }

  list(filter: ListFilter = {}): StreamView[] {
    const ports = new Set([
      ...this.options.cache.desired.keys(),
      ...this.options.local.list().map((stream) => stream.port),
    ]);
    const views: StreamView[] = [];
    for (const port of ports) {
      const view = this.get(port);
      if (view && (filter.labels ?? []).every(([key, value]) => view.labels[key] === value)) views.push(view);
    }
    return views.sort((a, b) => a.port - b.port);
  }

  status(store: StoreState): DaemonStatus {
    const local = this.options.local.status();
    const streams = this.list();
    const failed = streams.filter((stream) => stream.state === 'failed');
    const removing = streams.filter((stream) => stream.state === 'removing').length;
    const draining = streams.filter((stream) => stream.state === 'draining').length;
    const hosts: FleetHost[] = [...this.options.cache.hosts.values()]
      .map((host) => {
        const counts = { live: 0, failed: 0, pending: 0, draining: 0 };
        for (const stream of streams) {
          const state = stream.hosts?.find((entry) => entry.host === host.id)?.state;
          // A host that drained a stream has it no more.
          if (state !== undefined && state !== 'drained') counts[state] += 1;
        }
        return { id: host.id, api: host.api, version: host.version, startedAt: host.startedAt, ...counts };
      })
      .sort((a, b) => a.id.localeCompare(b.id));
    return {
      ...local,
      streams: {
        total: streams.length,
        live: streams.length - failed.length - removing - draining,
        failed: failed.length,
        ...(removing > 0 ? { removing } : {}),
        ...(draining > 0 ? { draining } : {}),
      },
      failed: failed.map((stream) => ({
        port: stream.port,
        backends: describeBackends(stream.backends),
        reason: stream.reason ?? 'unknown',
      })),
      problems: [...local.problems, ...store.problems],
      store: {
        kind: 'etcd',
        state: store.connected ? 'connected' : 'unreachable',
        since: store.since,
        ...(store.connected ? {} : { message: store.lastError }),
        hostId: this.options.hostId,
        endpoints: [...store.endpoints],
        prefix: store.prefix,
      },
      hosts,
    };
  }
}
