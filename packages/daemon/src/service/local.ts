/**
 * The local service: the Conductor does what the APIs ask on this host. It checks ports against
 * the range, routes each port to the nginx instance that owns it (placement.ts), allocates free
 * ports (free-port.ts), runs declarative applies (apply.ts), removes expired streams (expiry.ts),
 * drains streams (drain.ts: the port refuses at once, the stream goes when its sessions have),
 * and answers lists and status. At start-up it loads the store, takes over old-format files
 * (migrate.ts), drops what expired while it was down, and has every instance bring nginx in line.
 */
import {
  type ApplyPlan,
  type ApplyResult,
  assertPortInRange,
  ConductorError,
  type CreateResult,
  type DaemonStatus,
  describeBackends,
  ErrorCode,
  formatPortRange,
  isPortInRange,
  type NginxMode,
  type PortRange,
  protocolsOf,
  type StreamRecord,
  type StreamSpec,
  type StreamView,
} from '@stream-conductor/shared';
import type { Logger } from '../log.js';
import type { Entry, MutationResult } from '../nginx/instance.js';
import type { Observatory } from '../observe/observatory.js';
import type { StreamStore } from '../streams/store.js';
import type { PortProbe } from '../sys/ports.js';
import { applyAllOrNothing, checkStreamSet, groupChanges, planApply } from './apply.js';
import { DrainLoop } from './drain.js';
import { dropExpired, ExpiryLoop } from './expiry.js';
import { createOnFreePort, firstFreePort, type PortSearch } from './free-port.js';
import { adoptOldFiles } from './migrate.js';
import { Placement, type ServiceInstance } from './placement.js';
import { renewedSpec, stampRecord, viewOf } from './records.js';
import { type ListFilter, matchesFilter, type StreamService } from './service.js';
import { daemonStatus } from './status.js';

export interface ConductorOptions {
  version: string;
  mode: NginxMode;
  portRange: PortRange;
  store: StreamStore;
  instances: ServiceInstance[];
  /** Where old-format files of the older service may be (STREAM_CONFIG_PATH). */
  legacyFolder: string;
  streamPrefix: string;
  /** Whether `port` can be bound now for these protocols. */
  probePort(port: number, protocols: Array<'tcp' | 'udp'>, listenAddress: string | undefined): Promise<PortProbe>;
  /** The address streams listen on when their definition names none. */
  defaultListenAddress?: string | undefined;
  log: Logger;
  now?: () => Date;
  /** How often expired streams are looked for; 1 s by default. */
  expiryIntervalMs?: number;
  /** Traffic, health, audit and metrics (see observe/). */
  observatory?: Observatory;
  /** The kernel's established sessions of a port: counted while it drains, cut at its deadline. */
  sessions?: { count(port: number): Promise<number>; cut(port: number): Promise<number> };
  /** How often draining ports are looked at; 1 s by default. */
  drainIntervalMs?: number;
}

export class Conductor implements StreamService {
  /**
   * Stored definitions no instance serves: outside PORT_RANGE since a configuration change
   * (failed), or draining (their port refuses while their sessions end).
   */
  private readonly parked = new Map<number, Entry>();
  private readonly problems: string[] = [];
  private readonly startedAt = new Date().toISOString();
  private readonly now: () => Date;
  /** Ports an automatic allocation is trying right now. */
  private readonly reserved = new Set<number>();
  private readonly placement: Placement;
  private readonly expiry: ExpiryLoop;
  private readonly drains: DrainLoop;
  /** Ports whose drain is starting, being called off or ending: one such change at a time. */
  private readonly drainBusy = new Set<number>();

  constructor(private readonly options: ConductorOptions) {
    this.placement = new Placement(options.instances);
    this.now = options.now ?? (() => new Date());
    this.expiry = new ExpiryLoop({
      now: this.now,
      intervalMs: options.expiryIntervalMs ?? 1000,
      records: () => this.entries().map((entry) => entry.record),
      remove: (port) =>
        this.parked.has(port)
          ? this.removeParked(port)
          : this.placement.onOwner(port, (instance) => instance.submit({ kind: 'remove', port })),
      log: options.log,
      observatory: options.observatory,
    });
    this.drains = new DrainLoop({
      now: this.now,
      intervalMs: options.drainIntervalMs ?? 1000,
      draining: () => this.draining().map((entry) => entry.record),
      sessions: (port) => this.sessions().count(port),
      cut: (port) => this.sessions().cut(port),
      finish: (record) =>
        this.drainStep(record.port, async () => {
          if (this.parked.get(record.port)?.record !== record) return false;
          await this.removeParked(record.port);
          return true;
        }).catch((error: unknown) => {
          if (error instanceof ConductorError && error.code === ErrorCode.Conflict) return false; // next look
          throw error;
        }),
      log: options.log,
      observatory: options.observatory,
    });
  }

  private sessions(): { count(port: number): Promise<number>; cut(port: number): Promise<number> } {
    const { sessions } = this.options;
    if (!sessions) throw new ConductorError(ErrorCode.NotSupported, 'this daemon cannot see the sessions of a port');
    return sessions;
  }

  /** Runs a change to the drain of `port`, refused while another one is under way. */
  private async drainStep<T>(port: number, step: () => Promise<T>): Promise<T> {
    if (this.drainBusy.has(port))
      throw new ConductorError(ErrorCode.Conflict, `a change to the drain of port ${port} is under way`, {
        hint: 'try again in a moment',
      });
    this.drainBusy.add(port);
    try {
      return await step();
    } finally {
      this.drainBusy.delete(port);
    }
  }

  private draining(): Entry[] {
    return [...this.parked.values()].filter((entry) => entry.state === 'draining');
  }

  /** Loads the store, adopts old-format files, drops expired streams, brings every nginx in line. */
  async start(): Promise<void> {
    const { store, instances, portRange, log } = this.options;
    const loaded = await store.load();
    this.problems.push(...loaded.problems);
    const records = new Map(loaded.records.map((record) => [record.port, record]));
    const old = { folder: this.options.legacyFolder, streamPrefix: this.options.streamPrefix, portRange };
    const { adopted, problems } = await adoptOldFiles(old, new Set(records.keys()), this.now, log);
    this.problems.push(...problems);
    for (const record of adopted) records.set(record.port, record);
    if (adopted.length > 0) await store.commit({ put: adopted, remove: [] });
    await dropExpired(records, store, this.now(), log);
    const served: StreamRecord[] = [];
    for (const record of records.values()) {
      if (record.drainingUntil !== undefined) {
        // It drained when the daemon stopped: its port stays closed; the loop ends the drain.
        this.parked.set(record.port, { record, state: 'draining' });
        continue;
      }
      if (isPortInRange(record.port, portRange)) {
        served.push(record);
        continue;
      }
      const reason = `port ${record.port} is outside PORT_RANGE ${formatPortRange(portRange)}`;
      this.parked.set(record.port, { record, state: 'failed', reason });
      this.problems.push(`stream on port ${record.port} is not served: ${reason}`);
    }
    const byInstance = await this.placement.assign(served);
    for (const instance of instances) instance.load(byInstance.get(instance) ?? []);
    await Promise.all(instances.map((instance) => instance.start()));
    if (instances.length > 1) await Promise.all(instances.map((instance) => instance.reviveHeldPorts(3000)));
    this.expiry.start();
    this.drains.start();
  }

  /**
   * Whether this host removes expired streams itself. A fleet's etcd removes them (their leases
   * end) while it answers; the host does it only when cut off from it.
   */
  setExpiryGate(gate: () => boolean): void {
    this.expiry.setGate(gate);
  }

  private entries(): Entry[] {
    return [...this.parked.values(), ...this.options.instances.flatMap((instance) => instance.list())];
  }

  private entry(port: number): Entry | undefined {
    return this.parked.get(port) ?? this.placement.ownerOf(port)?.get(port);
  }

  list(filter: ListFilter = {}): StreamView[] {
    const selected = this.entries().filter((entry) => matchesFilter(entry.record.labels, filter));
    return selected.map((entry) => this.view(entry)).sort((a, b) => a.port - b.port);
  }

  get(port: number): StreamView | undefined {
    const entry = this.entry(port);
    return entry ? this.view(entry) : undefined;
  }

  private view(entry: Entry): StreamView {
    const view = viewOf(entry);
    const open = entry.state === 'draining' ? this.drains.openSessions(entry.record.port) : undefined;
    if (open !== undefined) view.openSessions = open;
    return view;
  }

  /** Probes the backends of a stream now. */
  async checkHealth(port: number): Promise<StreamView> {
    const stream = this.get(port);
    if (!stream) throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
    await this.options.observatory?.health.check(port);
    return stream;
  }

  private answer(port: number, result: MutationResult): CreateResult {
    if (result.change === 'created') this.options.observatory?.traffic.reset(port);
    // What this change made live, even if a later change to the port was applied since.
    const stream = result.entry ? viewOf(result.entry) : this.get(port);
    if (!stream) throw new ConductorError(ErrorCode.Internal, `stream ${port} vanished after it was applied`);
    const change =
      result.change === 'created' || result.change === 'replaced' || result.change === 'unchanged'
        ? result.change
        : 'replaced';
    return { stream, warnings: result.warnings, change };
  }

  private checkPort(port: number): void {
    assertPortInRange(port, this.options.portRange);
    const parked = this.parked.get(port);
    if (parked?.state === 'draining')
      throw new ConductorError(
        ErrorCode.StreamExists,
        `port ${port} is draining until ${parked.record.drainingUntil ?? ''}: its sessions are ending`,
        { hint: `cancel the drain (conductor drain ${port} --cancel) or remove it (conductor rm ${port})` },
      );
    if (parked)
      throw new ConductorError(
        ErrorCode.StreamExists,
        `port ${port} already has a stream (to ${describeBackends(parked.record.backends)})`,
      );
  }

  /** Creates a stream (port 0: on a free port the daemon picks); resolves once it is live. */
  async create(spec: StreamSpec): Promise<CreateResult> {
    if (spec.port === 0) return this.createOnFreePort(spec);
    this.checkPort(spec.port);
    const result = await this.placement.onOwner(spec.port, (instance) =>
      instance.submit({ kind: 'create', record: stampRecord(spec, undefined, this.now()) }),
    );
    return this.answer(spec.port, result);
  }

  /** Creates or replaces the stream on `spec.port`; a spec equal to the current one changes nothing. */
  async put(spec: StreamSpec): Promise<CreateResult> {
    this.checkPort(spec.port);
    const result = await this.placement.onOwner(spec.port, (instance) =>
      instance.submit({ kind: 'put', record: stampRecord(spec, instance.get(spec.port)?.record, this.now()) }),
    );
    return this.answer(spec.port, result);
  }

  private portSearch(protocols: Array<'tcp' | 'udp'>, listenAddress: string | undefined): PortSearch {
    return {
      range: this.options.portRange,
      reserved: this.reserved,
      taken: (port) => this.entry(port) !== undefined,
      probe: (port) => this.options.probePort(port, protocols, listenAddress),
    };
  }

  /** A create on the first free port; a port another request or process won meanwhile is skipped. */
  private createOnFreePort(spec: StreamSpec): Promise<CreateResult> {
    const search = this.portSearch(protocolsOf(spec), spec.listenAddress ?? this.options.defaultListenAddress);
    return createOnFreePort({ ...search, retryOn: [ErrorCode.StreamExists, ErrorCode.PortInUse] }, async (port) => {
      const record = stampRecord({ ...spec, port }, undefined, this.now());
      const result = await this.placement.onOwner(port, (instance) => instance.submit({ kind: 'create', record }));
      return this.answer(port, result);
    });
  }

  /**
   * The first port of the range without a stream that no other process holds either. It is not
   * reserved: two callers may be told the same port, and the second create is refused.
   */
  freePort(): Promise<number | undefined> {
    return firstFreePort(this.portSearch(['tcp'], this.options.defaultListenAddress));
  }

  /** Extends (or shortens) the life of a stream; resolves once recorded. */
  async renew(port: number, expiresAt: string | undefined): Promise<CreateResult> {
    const entry = this.entry(port);
    if (!entry || this.parked.has(port))
      throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
    return this.put(renewedSpec(entry.record, expiresAt));
  }

  private async removeParked(port: number): Promise<{ warnings: string[] }> {
    await this.options.store.commit({ put: [], remove: [port] });
    this.parked.delete(port);
    return { warnings: [] };
  }

  /** Removes a stream; resolves once its port refuses new connections. */
  async remove(port: number, options: { killSessions?: boolean } = {}): Promise<{ warnings: string[] }> {
    if (this.parked.get(port)?.state === 'draining' && options.killSessions === true) {
      const answer = await this.removeParked(port);
      await this.sessions().cut(port);
      return answer;
    }
    if (this.parked.has(port)) return this.removeParked(port);
    if (!isPortInRange(port, this.options.portRange) || !this.placement.ownerOf(port)) {
      throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
    }
    const result = await this.placement.onOwner(port, (instance) =>
      instance.submit({ kind: 'remove', port, killSessions: options.killSessions === true }),
    );
    return { warnings: result.warnings };
  }

  /**
   * Drains a stream: its port refuses new connections (answered once the kernel does), its open
   * TCP sessions go on, and it is removed when the last one ends or, at `timeoutMs` from now, its
   * sessions are cut. A stream that drains already gets the new deadline.
   */
  drain(port: number, timeoutMs: number): Promise<StreamView> {
    return this.drainStep(port, () => this.startDrain(port, timeoutMs));
  }

  private async startDrain(port: number, timeoutMs: number): Promise<StreamView> {
    const drainingUntil = new Date(this.now().getTime() + timeoutMs).toISOString();
    const parked = this.parked.get(port);
    if (parked?.state === 'draining') {
      const record = { ...parked.record, drainingUntil };
      await this.options.store.commit({ put: [record], remove: [] });
      this.parked.set(port, { record, state: 'draining' });
      return this.view({ record, state: 'draining' });
    }
    const entry = this.entry(port);
    if (!entry || parked || !isPortInRange(port, this.options.portRange))
      throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
    if (entry.record.protocol === 'udp')
      throw new ConductorError(
        ErrorCode.InvalidInput,
        `stream ${port} is UDP: the daemon cannot see its sessions to drain them`,
        { hint: `remove it (conductor rm ${port}); nginx keeps a UDP session until its idle timeout` },
      );
    this.sessions(); // refuses before anything changes when this daemon cannot count sessions
    const record: StreamRecord = { ...entry.record, drainingUntil };
    // Held here first, so that no create takes the port between the remove and the store's note.
    const held: Entry = { record, state: 'draining' };
    this.parked.set(port, held);
    try {
      await this.placement.onOwner(port, (instance) => instance.submit({ kind: 'remove', port }));
      await this.options.store.commit({ put: [record], remove: [] });
    } catch (error) {
      if (this.parked.get(port) === held) this.parked.delete(port);
      throw error;
    }
    this.drains.noteSessions(port, await this.sessions().count(port));
    return this.view(held);
  }

  /** Ends the drain of a stream: its port takes connections again (answered once it does). */
  undrain(port: number): Promise<CreateResult> {
    return this.drainStep(port, () => this.endDrain(port));
  }

  private async endDrain(port: number): Promise<CreateResult> {
    const parked = this.parked.get(port);
    if (parked?.state !== 'draining')
      throw new ConductorError(ErrorCode.NotFound, `stream ${port} is not draining`, {
        hint: this.entry(port) ? undefined : `no stream is on port ${port}`,
      });
    const { drainingUntil: _until, ...rest } = parked.record;
    const record: StreamRecord = { ...rest, updatedAt: this.now().toISOString() };
    assertPortInRange(port, this.options.portRange);
    // The port stays held as draining until nginx serves it again (or refuses to).
    const result = await this.placement.onOwner(port, (instance) => instance.submit({ kind: 'create', record }));
    if (this.parked.get(port) === parked) this.parked.delete(port);
    // The same stream, back: its traffic counts go on (answer() would start them over).
    const stream = result.entry ? viewOf(result.entry) : this.get(port);
    if (!stream) throw new ConductorError(ErrorCode.Internal, `stream ${port} vanished after it was applied`);
    return { stream, warnings: result.warnings, change: 'replaced' };
  }

  /** What applying `specs` would change (see apply). */
  plan(specs: StreamSpec[], prune: boolean): ApplyPlan {
    const live = this.entries().filter((entry) => !this.parked.has(entry.record.port));
    return planApply(
      specs,
      prune,
      (port) => {
        const entry = this.entry(port);
        return entry ? { record: entry.record, live: entry.state === 'live' } : undefined;
      },
      live.map((entry) => entry.record.port),
      this.options.defaultListenAddress,
    );
  }

  /**
   * A declarative apply: the daemon makes its streams match `specs` (and, with prune, removes the
   * others) in one verified reload per nginx instance, all or nothing: when any part is refused,
   * the parts already applied are put back and the whole apply is refused.
   */
  async apply(specs: StreamSpec[], options: { prune: boolean; dryRun: boolean }): Promise<ApplyResult> {
    checkStreamSet(specs, (port) => this.checkPort(port));
    const plan = this.plan(specs, options.prune);
    if (options.dryRun) return { dryRun: true, applied: false, plan, warnings: [] };
    const changed = new Set([...plan.create, ...plan.update]);
    const warnings = await this.applyChanges(
      specs.filter((spec) => changed.has(spec.port)),
      plan.delete,
    );
    return { dryRun: false, applied: true, plan, warnings };
  }

  /**
   * Puts `puts` and removes `deletes` in one verified reload per nginx instance, all or nothing:
   * when any part is refused, the parts already applied are put back and the error is thrown.
   * Answers the warnings.
   */
  async applyChanges(puts: StreamSpec[], deletes: number[]): Promise<string[]> {
    for (const spec of puts) this.checkPort(spec.port);
    const bySpec = new Map(puts.map((spec) => [spec.port, spec]));
    const created = puts.filter((spec) => this.entry(spec.port) === undefined).map((spec) => spec.port);
    const ports = [
      ...puts.map((spec) => spec.port),
      ...deletes.filter((port) => !bySpec.has(port) && this.placement.ownerOf(port) !== undefined),
    ];
    // Hold every port of the plan on its instance for the whole apply.
    const slots = ports.map((port) => [port, this.placement.hold(port)] as const);
    let warnings: string[];
    try {
      const parts = groupChanges(
        slots.map(([port, slot]) => [port, slot.instance] as const),
        (port, existing) => {
          const spec = bySpec.get(port);
          return spec ? stampRecord(spec, existing, this.now()) : undefined;
        },
      );
      warnings = await applyAllOrNothing(parts, this.options.log);
    } finally {
      for (const [port, slot] of slots) this.placement.release(port, slot);
    }
    for (const port of created) this.options.observatory?.traffic.reset(port);
    return warnings;
  }

  status(): DaemonStatus {
    const { version, mode, portRange, instances } = this.options;
    return daemonStatus({
      version,
      mode,
      portRange,
      streams: this.list(),
      instances,
      problems: this.problems,
      startedAt: this.startedAt,
    });
  }

  async close(): Promise<void> {
    this.expiry.stop();
    this.drains.stop();
    await Promise.all(this.options.instances.map((instance) => instance.close()));
  }
}
