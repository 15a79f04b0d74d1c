/**
 * Fleet mode: several edge hosts, one desired set of streams in etcd. This file is the service
 * the HTTP layer calls; it wires the rooms of fleet/ together:
 *   keys.ts      the key schema (streams/<port>, hosts/<id>, applied/<id>/<port>) and its values
 *   etcd.ts      the etcd client and its config, and the store interface writes use
 *   desired.ts   this host's copy of the fleet's keys, by revision
 *   session.ts   registration on a lease, the watch, syncs and the supervision
 *   converge.ts  this host brought in line with the fleet, and its reports
 *   writes.ts    the write protocol (pending, apply here, commit or restore)
 *   views.ts     streams, hosts and status as the API shows them
 *   answer.ts    the answer to a write (warns when another client's change followed at once)
 *   routes.ts    routes by TLS server name: a read-modify-write of one port's definition
 *
 * Every host watches the prefix, converges its nginx to it (one port at a time, in order), and
 * reports what it applied. Without etcd a host keeps serving what it has, refuses changes (503),
 * says so in its status, expires streams itself, and converges to the full set once etcd answers.
 */

import { setTimeout as delay } from 'node:timers/promises';
import {
  type ApplyPlan,
  type ApplyResult,
  assertPortInRange,
  ConductorError,
  type CreateResult,
  type DaemonStatus,
  type DrainAnswer,
  describeBackends,
  ErrorCode,
  type HostStreamState,
  type PortRange,
  protocolsOf,
  type RouteSpec,
  type StreamRecord,
  type StreamSpec,
  type StreamView,
  sameSpec,
} from '@stream-conductor/shared';
import type { Logger } from '../log.js';
import { refuseSilentShrink } from '../nginx/pipeline/admission.js';
import { checkStreamSet, planApply } from '../service/apply.js';
import { createOnFreePort, firstFreePort } from '../service/free-port.js';
import { checkSpan, refuseRangePart } from '../service/ranges.js';
import { renewedSpec } from '../service/records.js';
import type { ListFilter, StreamService } from '../service/service.js';
import { PortTurns } from '../service/turns.js';
import type { PortProbe } from '../sys/ports.js';
import { answer } from './answer.js';
import { Convergence } from './converge.js';
import { sameDefinition } from './definition.js';
import { DesiredCache } from './desired.js';
import { createEtcdClient, type EtcdConfig, EtcdStore } from './etcd.js';
import { type Desired, FleetKeys } from './keys.js';
import type { LocalService } from './local.js';
import { FleetRoutes } from './routes.js';
import { Session } from './session.js';
import { FleetViews } from './views.js';
import { FleetWrites } from './writes.js';

export interface FleetOptions {
  local: LocalService;
  config: EtcdConfig;
  version: string;
  portRange: PortRange;
  probePort(port: number, protocols: Array<'tcp' | 'udp'>, listenAddress: string | undefined): Promise<PortProbe>;
  defaultListenAddress?: string | undefined;
  log: Logger;
  /** How often streams this host could not apply (or report) are tried again. */
  retryIntervalMs: number;
  now?: () => Date;
  /**
   * Test hook (CONDUCTOR_TEST_FLEET_DEAF names a file): while that file exists, this host drops
   * the stream events its watch delivers, as a host whose watch lost them would.
   */
  deafFile?: string | undefined;
}

export class FleetConductor implements StreamService {
  private readonly now: () => Date;
  private readonly cache: DesiredCache;
  private readonly convergence: Convergence;
  private readonly session: Session;
  private readonly writes: FleetWrites;
  private readonly views: FleetViews;
  private readonly routes: FleetRoutes;
  /** Ports an automatic allocation is trying right now. */
  private readonly reserved = new Set<number>();
  /** Renewals of one port through this host, one after another. */
  private readonly renewals = new PortTurns();

  constructor(private readonly options: FleetOptions) {
    const { config, local, log } = options;
    const now = options.now ?? (() => new Date());
    this.now = now;
    const keys = new FleetKeys(config.prefix);
    const client = createEtcdClient(config);
    const cache = new DesiredCache(keys, now, log);
    this.cache = cache;
    // The session is the reporter; it needs the convergence, so it is looked up when used.
    const reporter = {
      ready: () => this.session.ready(),
      write: (port: number, text: string | undefined) => this.session.write(port, text),
    };
    this.convergence = new Convergence({
      local,
      cache,
      reporter,
      portRange: options.portRange,
      log,
      busy: (port) => this.reserved.has(port),
      drained: async (port, revision) => {
        if (await this.writes.removeIfUnchanged(port, revision))
          log.info('drained on every host of the fleet: removed', { port });
      },
      now,
    });
    const host = {
      id: config.hostId,
      api: config.advertiseUrl,
      version: options.version,
      startedAt: now().toISOString(),
    };
    this.session = new Session({
      client,
      keys,
      cache,
      convergence: this.convergence,
      local,
      host,
      log,
      now,
      retryIntervalMs: options.retryIntervalMs,
      deafFile: options.deafFile,
    });
    this.writes = new FleetWrites({
      store: new EtcdStore(client),
      keys,
      cache,
      convergence: this.convergence,
      local,
      hostId: config.hostId,
      now,
      log,
      connected: () => this.session.connected,
      reread: () => this.session.reread(),
    });
    this.views = new FleetViews({
      cache,
      local,
      hostId: config.hostId,
      failures: this.convergence.failures,
      removing: (port) => this.convergence.removing(port),
    });
    this.routes = new FleetRoutes({
      now,
      store: {
        read: (port) => this.writes.read(port),
        standing: (current) => this.writes.standing(current),
        changing: (current) => this.writes.changing(current),
        rangeHolding: async (port) => {
          await this.writes.readStreams();
          const key = this.cache.keyOf(port);
          return key === port ? undefined : this.cache.effective(key);
        },
        write: (port, current, next) => this.change(port, current, next),
      },
    });
    // While etcd answers, its leases remove expired streams; cut off from it, this host does.
    local.setExpiryGate(() => !this.session.connected);
  }

  /** Serves what this host has, then joins the fleet (now, or as soon as etcd answers). */
  async start(): Promise<void> {
    await this.options.local.start();
    await this.session.start();
  }

  private requireConnected(): void {
    if (this.session.connected) return;
    throw new ConductorError(
      ErrorCode.StoreUnavailable,
      `the fleet's store (etcd) is not reachable: ${this.session.lastError}`,
      {
        hint: 'this host keeps serving its streams; changes are taken again once etcd answers',
      },
    );
  }

  /** Writes one change (null: removal) given the port's key as read. */
  private change(
    port: number,
    current: Desired | undefined,
    next: StreamRecord | null,
    options: { killSessions?: boolean } = {},
  ): Promise<string[]> {
    return this.writes.write([{ port, current, next }], { kind: 'one', ...options }, () =>
      this.admitSpans(next ? [next] : []),
    );
  }

  /**
   * Once a write's own keys hold it as pending: refuses it when another stream of the fleet,
   * standing or pending, shares a port with it. Each port's key guards only that port, so a range
   * and a stream on one of its ports written at once through two hosts would both pass the check
   * before step 1; whichever checks here second sees the other pending (both may be refused,
   * never both taken).
   */
  private async admitSpans(specs: StreamSpec[]): Promise<void> {
    if (specs.length === 0) return;
    await this.writes.readStreams();
    const own = new Set(specs.map((spec) => spec.port));
    const held: Array<{ record: StreamRecord }> = [];
    for (const [port, desired] of this.cache.desired) {
      if (own.has(port)) continue;
      const standing = this.cache.effective(port);
      if (standing) held.push({ record: standing });
      if (desired.pending && !desired.pending.remove) held.push({ record: desired.record });
    }
    for (const spec of specs) checkSpan(spec, this.options.portRange, held);
  }

  private answer(
    port: number,
    warnings: string[],
    change: CreateResult['change'],
    applied: StreamRecord,
  ): CreateResult {
    return answer(port, this.get(port), this.cache.effective(port), { warnings, change, applied });
  }

  /**
   * Refuses a spec that shares a port with another of the fleet's streams (a range holds every
   * port from its first to its last), as the store holds them now, naming the port.
   */
  private async checkPorts(spec: StreamSpec): Promise<void> {
    assertPortInRange(spec.port, this.options.portRange);
    this.requireConnected();
    await this.writes.readStreams();
    checkSpan(spec, this.options.portRange, this.cache.effectiveStreams());
  }

  async create(spec: StreamSpec): Promise<CreateResult> {
    if (spec.port === 0) return this.createOnFreePort(spec);
    await this.checkPorts(spec);
    const current = await this.writes.read(spec.port);
    const standing = this.writes.standing(current);
    if (standing) {
      throw new ConductorError(
        ErrorCode.StreamExists,
        `port ${spec.port} already has a stream (to ${describeBackends(standing.backends)})`,
        {
          hint: 'remove it first, pick another port, or replace it (PUT /v1/streams/{port})',
        },
      );
    }
    const record: StreamRecord = { ...spec, createdAt: this.now().toISOString() };
    const warnings = await this.change(spec.port, current, record);
    return this.answer(spec.port, warnings, 'created', record);
  }

  async put(spec: StreamSpec, _ifSpec?: undefined, spanNamed = false): Promise<CreateResult> {
    await this.checkPorts(spec);
    const current = await this.writes.read(spec.port);
    const standing = this.writes.standing(current);
    refuseWhileDraining(standing);
    refuseSilentShrink(standing ?? undefined, spec, spanNamed);
    if (standing && !current?.pending && sameSpec(standing, spec)) {
      const warnings = await this.convergence.converge(spec.port);
      return this.answer(spec.port, warnings, 'unchanged', standing);
    }
    const now = this.now().toISOString();
    const record: StreamRecord = standing
      ? { ...spec, createdAt: standing.createdAt, updatedAt: now }
      : { ...spec, createdAt: now };
    const warnings = await this.change(spec.port, current, record);
    return this.answer(spec.port, warnings, standing ? 'replaced' : 'created', record);
  }

  /**
   * Only the lifetime changes, of the definition read here: the write holds only while the port's
   * key is as read, so a change that got there first (a replace) is kept. Renewals of one port
   * through this host run one after another. Another host's change of the key under way is waited
   * for (a second at most), not written over; a renewal that lost the key to another change
   * (another host's renewal, say) reads it again and renews what stands then, up to ten times.
   */
  renew(port: number, expiresAt: string | undefined): Promise<CreateResult> {
    this.requireConnected();
    return this.renewals.run(port, async () => {
      for (let attempt = 1; ; attempt += 1) {
        let current = await this.writes.read(port);
        for (let look = 0; look < 40 && this.writes.changing(current); look += 1) {
          await new Promise((resolve) => setTimeout(resolve, 25));
          current = await this.writes.read(port);
        }
        const standing = this.writes.standing(current);
        // A draining stream has no lifetime to renew (as on a single host).
        if (!standing || standing.drainingUntil !== undefined)
          throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
        const spec = renewedSpec(standing, expiresAt);
        if (!current?.pending && sameSpec(standing, spec))
          return this.answer(port, await this.convergence.converge(port), 'unchanged', standing);
        const record: StreamRecord = { ...spec, createdAt: standing.createdAt, updatedAt: this.now().toISOString() };
        try {
          return this.answer(port, await this.change(port, current, record), 'replaced', record);
        } catch (error) {
          if (!(error instanceof ConductorError && error.code === ErrorCode.Conflict) || attempt >= 10) throw error;
          // A random pause, so that hosts renewing one port at once do not meet again.
          await new Promise((resolve) => setTimeout(resolve, Math.random() * 20));
        }
      }
    });
  }

  async remove(port: number, options: { killSessions?: boolean } = {}): Promise<{ warnings: string[] }> {
    const { current, standing } = await this.keyed(port, 'rm');
    if (!standing) {
      if (this.options.local.get(port)) return { warnings: await this.convergence.converge(port, options) };
      throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
    }
    return { warnings: await this.change(port, current, null, options) };
  }

  /**
   * Drains a stream on every host: the fleet's record says until when (its key on a lease that
   * ends a little after that), each host closes its port and keeps its sessions (converge.ts), and
   * reports `draining` with its open sessions, then `drained`. The key goes when every host has
   * reported drained, or with its lease at the deadline, when each host cuts what is left.
   * Answered once this host's port refuses connections and every other host says its port does
   * (or, past a bound, with the hosts that have not said so yet named).
   */
  async drain(port: number, timeoutMs: number): Promise<DrainAnswer> {
    const { current, standing } = await this.keyed(port, 'drain');
    if (!standing) throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
    if (standing.protocol === 'udp')
      throw new ConductorError(
        ErrorCode.InvalidInput,
        `stream ${port} is UDP: the daemon cannot see its sessions to drain them`,
        { hint: `remove it (conductor rm ${port}); nginx keeps a UDP session until its idle timeout` },
      );
    const until = Math.min(this.now().getTime() + timeoutMs, Date.parse(standing.expiresAt ?? '9999-12-31T00:00:00Z'));
    const record: StreamRecord = { ...standing, drainingUntil: new Date(until).toISOString() };
    await this.change(port, current, record);
    return this.drainConfirmed(port, record);
  }

  /** Calls a fleet-wide drain off: every host serves the stream again (see drain). */
  async undrain(port: number): Promise<CreateResult> {
    const { current, standing } = await this.keyed(port, 'drain');
    if (!standing) throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
    if (standing.drainingUntil === undefined)
      throw new ConductorError(ErrorCode.NotFound, `stream ${port} is not draining`);
    const { drainingUntil: _until, ...rest } = standing;
    const record: StreamRecord = { ...rest, updatedAt: this.now().toISOString() };
    const warnings = await this.change(port, current, record);
    return this.answer(port, warnings, 'replaced', record);
  }

  /**
   * The port's key and the stream it stands for, as the store holds them now (for rm, drain and
   * its cancel); a port inside a range is refused naming the range.
   */
  private async keyed(
    port: number,
    action: 'rm' | 'drain',
  ): Promise<{ current: Desired | undefined; standing: StreamRecord | null }> {
    this.requireConnected();
    await this.writes.readStreams();
    const held = this.cache.effective(this.cache.keyOf(port));
    refuseRangePart(held && { record: held }, port, action);
    const current = await this.writes.read(port);
    return { current, standing: this.writes.standing(current) };
  }

  /**
   * The draining stream once every host of the fleet has said its port refuses connections (or
   * that it could not drain), waiting up to CONFIRM_MS for their reports. Every host that has not
   * said so is named in a warning: the answer vouches for the others only.
   */
  private async drainConfirmed(port: number, record: StreamRecord): Promise<DrainAnswer> {
    const deadline = Date.now() + CONFIRM_MS;
    // A stream with no session anywhere may be gone before the last look: the view before it went.
    let stream: StreamView = { ...record, state: 'draining' };
    for (;;) {
      const view = this.get(port);
      if (view === undefined) return { stream };
      if (view.state !== 'draining')
        return {
          stream: view,
          warnings: [`port ${port} was changed by another call meanwhile: it is ${view.state}, not draining`],
        };
      stream = view;
      const hosts = view.hosts ?? [];
      const settled = hosts.every(({ state }) => state === 'draining' || state === 'drained' || state === 'failed');
      if (settled || Date.now() >= deadline) {
        const warnings = hosts.flatMap((host) => drainWarning(host, port));
        return warnings.length === 0 ? { stream } : { stream, warnings };
      }
      await delay(CONFIRM_POLL_MS);
    }
  }

  /** Whether the fleet (a stream, a range that holds it, or a change under way) or this host has `port`. */
  private taken(port: number): boolean {
    return this.cache.desired.has(this.cache.keyOf(port)) || this.options.local.get(port) !== undefined;
  }

  /** A read-modify-write of the port's definition in the store, tried again when another change got in (routes.ts). */
  async addRoute(port: number, route: RouteSpec): Promise<CreateResult> {
    assertPortInRange(port, this.options.portRange);
    this.requireConnected();
    const { record, change, warnings } = await this.routes.add(port, route);
    return this.answer(port, warnings, change, record);
  }

  async removeRoute(
    port: number,
    id: string,
  ): Promise<{ removed: 'route' | 'stream'; result?: CreateResult; warnings: string[] }> {
    assertPortInRange(port, this.options.portRange);
    this.requireConnected();
    const { record, warnings } = await this.routes.remove(port, id);
    if (record === null) return { removed: 'stream', warnings };
    return { removed: 'route', result: this.answer(port, warnings, 'replaced', record), warnings };
  }

  private createOnFreePort(spec: StreamSpec): Promise<CreateResult> {
    this.requireConnected();
    return createOnFreePort(
      {
        range: this.options.portRange,
        reserved: this.reserved,
        taken: (port) => this.taken(port),
        probe: (port) =>
          this.options.probePort(port, protocolsOf(spec), spec.listenAddress ?? this.options.defaultListenAddress),
        // Another host took it first (conflict), or this host cannot bind it after all.
        retryOn: [ErrorCode.Conflict, ErrorCode.StreamExists, ErrorCode.PortInUse],
      },
      async (port) => {
        if (await this.writes.read(port)) return undefined; // another host has it, or is taking it
        const record: StreamRecord = { ...spec, port, createdAt: this.now().toISOString() };
        const warnings = await this.change(port, undefined, record);
        return this.answer(port, warnings, 'created', record);
      },
    );
  }

  plan(specs: StreamSpec[], prune: boolean): ApplyPlan {
    return planApply(
      specs,
      prune,
      (port) => {
        const record = this.cache.effective(port);
        if (!record) return undefined;
        const local = this.options.local.get(port);
        // A stream the fleet drains is as it should be while it drains (listed as it is, it drains on).
        const live = record.drainingUntil !== undefined || (local?.state === 'live' && sameDefinition(local, record));
        return { record, live };
      },
      this.cache.effectivePorts(),
      this.options.defaultListenAddress,
    );
  }

  /**
   * A declarative apply across the fleet, in the same three steps as one change: one transaction
   * writes the whole plan as pending (it holds only if no port of it changed since the read), one
   * all-or-nothing apply on this host, one transaction commits it all (or puts it all back).
   */
  async apply(
    specs: StreamSpec[],
    options: { prune: boolean; dryRun: boolean; spanNamed?: ReadonlySet<number> },
  ): Promise<ApplyResult> {
    checkStreamSet(specs, (port) => assertPortInRange(port, this.options.portRange));
    this.requireConnected();
    // Plan against the store as it is now, not the watch's copy.
    await this.writes.readStreams();
    const plan = this.plan(specs, options.prune);
    // As on a single host: a draining stream is changed or removed by its own calls only.
    for (const port of [...plan.update, ...plan.delete]) refuseWhileDraining(this.cache.effective(port));
    // Each port of a changed stream free of the fleet's other streams, as on a single host.
    const unchanged = new Set(plan.unchanged);
    const standing = this.cache.effectiveStreams();
    for (const spec of specs) {
      if (unchanged.has(spec.port)) continue;
      checkSpan(spec, this.options.portRange, standing);
      refuseSilentShrink(this.cache.effective(spec.port), spec, options.spanNamed?.has(spec.port) === true);
    }
    // The files are checked here as a single host checks them, for a dry run too; nothing is written.
    await this.options.local.checkSetTls(specs);
    if (options.dryRun) return { dryRun: true, applied: false, plan, warnings: [] };
    const ports = [...plan.create, ...plan.update, ...plan.delete];
    if (ports.length === 0) return { dryRun: false, applied: true, plan, warnings: [] };
    const bySpec = new Map(specs.map((spec) => [spec.port, spec]));
    const now = this.now().toISOString();
    const writes = ports.map((port) => {
      const current = this.cache.desired.get(port);
      const spec = bySpec.get(port);
      const before = this.writes.standing(current);
      const next = spec
        ? before
          ? { ...spec, createdAt: before.createdAt, updatedAt: now }
          : { ...spec, createdAt: now }
        : null;
      return { port, current, next };
    });
    const warnings = await this.writes.write(writes, { kind: 'set' }, () =>
      this.admitSpans(writes.flatMap(({ next }) => (next ? [next] : []))),
    );
    return { dryRun: false, applied: true, plan, warnings };
  }

  freePort(): Promise<number | undefined> {
    return firstFreePort({
      range: this.options.portRange,
      reserved: this.reserved,
      taken: (port) => this.taken(port),
      probe: (port) => this.options.probePort(port, ['tcp'], this.options.defaultListenAddress),
    });
  }

  list(filter: ListFilter = {}): StreamView[] {
    return this.views.list(filter);
  }

  get(port: number): StreamView | undefined {
    return this.views.get(port);
  }

  async checkHealth(port: number): Promise<StreamView> {
    if (this.options.local.get(port)) await this.options.local.checkHealth(port);
    const stream = this.get(port);
    if (!stream) throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
    return stream;
  }

  status(): DaemonStatus {
    const { session } = this;
    const { endpoints, prefix } = this.options.config;
    return this.views.status({
      connected: session.connected,
      since: session.since,
      lastError: session.lastError,
      endpoints,
      prefix,
      problems: session.problems,
    });
  }

  async close(): Promise<void> {
    await this.session.close();
    await this.options.local.close();
  }
}

/** How long a drain waits for the other hosts to say their port refuses connections. */
const CONFIRM_MS = 10_000;
const CONFIRM_POLL_MS = 50;

/** What a drain's answer says of a host that has not said its port refuses connections (none when it has). */
export function drainWarning(host: HostStreamState, port: number): string[] {
  if (host.state === 'draining' || host.state === 'drained') return [];
  if (host.state === 'failed')
    return [
      `host ${host.host} could not drain port ${port}, it may still take connections: ${host.reason ?? 'unknown'}`,
    ];
  return [
    `host ${host.host} has not said its port ${port} refuses connections yet (${host.state}); it drains once it converges`,
  ];
}

/** A draining stream changes through its own calls only (drain, cancel, rm), as on a single host. */
function refuseWhileDraining(standing: StreamRecord | null | undefined): void {
  if (standing?.drainingUntil === undefined) return;
  throw new ConductorError(
    ErrorCode.StreamExists,
    `port ${standing.port} is draining until ${standing.drainingUntil}: its sessions are ending`,
    {
      hint: `cancel the drain (conductor drain ${standing.port} --cancel) or remove it (conductor rm ${standing.port})`,
    },
  );
}
