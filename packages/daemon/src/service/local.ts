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
  type DrainAnswer,
  describeBackends,
  ErrorCode,
  formatPortRange,
  formatPorts,
  isPortInRange,
  lastPort,
  type NginxMode,
  type PortRange,
  portsOf,
  protocolsOf,
  type RouteSpec,
  type StreamRecord,
  type StreamSpec,
  type StreamView,
  sameSpec,
} from '@stream-conductor/shared';
import type { Logger } from '../log.js';
import type { Entry, MutationResult } from '../nginx/instance.js';
import { refuseSilentShrink } from '../nginx/pipeline/admission.js';
import type { Observatory } from '../observe/observatory.js';
import type { StreamStore } from '../streams/store.js';
import type { PortProbe } from '../sys/ports.js';
import { applyAllOrNothing, checkStreamSet, groupChanges, planApply } from './apply.js';
import { Drains, type SessionControl } from './drain.js';
import { dropExpired, ExpiryLoop } from './expiry.js';
import { createOnFreePort, firstFreePort, type PortSearch } from './free-port.js';
import { adoptOldFiles } from './migrate.js';
import { Placement, type ServiceInstance } from './placement.js';
import { checkSpan, coveringEntry, refuseRangePart } from './ranges.js';
import { portWithRoute, renewedSpec, specOf, stampRecord, viewOf, withoutRoute, withRoute } from './records.js';
import { type ListFilter, matchesFilter, type StreamService } from './service.js';
import { daemonStatus } from './status.js';
import { restoreCopies, TlsCopies, TlsRenewals } from './stream-tls.js';
import { PortTurns } from './turns.js';

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
  /** The sessions nginx holds on a port: counted while it drains, cut at its deadline. */
  sessions?: SessionControl;
  /** How often draining ports are looked at; 1 s by default, 0 only when asked (lookAtDrains). */
  drainIntervalMs?: number;
  /** Streams' TLS files: where their checked copies go, and how often the originals are looked at. */
  streamTls?: { dir: string; intervalMs: number; allowedDirs?: string[] | undefined };
}

/** Whether a spec names TLS files not checked yet (a renewal of its lifetime carries its copies). */
function hasTlsFiles(spec: StreamSpec): boolean {
  return (spec.tlsCert !== undefined || spec.backendCa !== undefined) && spec.tlsMaterial === undefined;
}

export class Conductor implements StreamService {
  /**
   * Stored definitions no instance serves: outside PORT_RANGE since a configuration change
   * (failed), or draining (their port refuses while their sessions end).
   */
  private readonly parked = new Map<number, Entry>();
  /** Route calls and renewals of one port, one after another (see routeTurns' use). */
  private readonly routeTurns = new PortTurns();
  private readonly problems: string[] = [];
  private readonly startedAt = new Date().toISOString();
  private readonly now: () => Date;
  /** Ports an automatic allocation is trying right now. */
  private readonly reserved = new Set<number>();
  private readonly placement: Placement;
  private readonly expiry: ExpiryLoop;
  private readonly drains: Drains;
  private readonly tlsRenewals: TlsRenewals | undefined;
  private readonly tlsCopies: TlsCopies | undefined;

  constructor(private readonly options: ConductorOptions) {
    this.placement = new Placement(options.instances);
    this.now = options.now ?? (() => new Date());
    this.expiry = new ExpiryLoop({
      now: this.now,
      intervalMs: options.expiryIntervalMs ?? 1000,
      // A draining stream ends with its drain (whose deadline is at most its expiry).
      records: () => this.entries().flatMap((entry) => (entry.state === 'draining' ? [] : [entry.record])),
      remove: (port) =>
        this.parked.has(port)
          ? this.removeParked(port)
          : this.placement.onOwner(port, (instance) => instance.submit({ kind: 'remove', port })),
      log: options.log,
      observatory: options.observatory,
    });
    this.drains = new Drains({
      now: this.now,
      intervalMs: options.drainIntervalMs ?? 1000,
      portRange: options.portRange,
      store: options.store,
      parked: this.parked,
      entry: (port) => this.entry(port),
      isHeld: (port) => this.placement.isHeld(port),
      removeFromNginx: (port) => this.placement.onOwner(port, (instance) => instance.submit({ kind: 'remove', port })),
      putOnNginx: (record) =>
        this.placement.onOwner(record.port, (instance) => instance.submit({ kind: 'create', record })),
      sessions: options.sessions,
      defaultListenAddress: options.defaultListenAddress,
      log: options.log,
      observatory: options.observatory,
    });
    const streamTls = options.streamTls;
    this.tlsCopies =
      streamTls === undefined
        ? undefined
        : new TlsCopies({
            dir: streamTls.dir,
            allowedDirs: streamTls.allowedDirs,
            now: this.now,
            records: () => this.entries().map((e) => e.record),
          });
    this.tlsRenewals =
      streamTls === undefined
        ? undefined
        : new TlsRenewals({
            dir: streamTls.dir,
            allowedDirs: streamTls.allowedDirs,
            now: this.now,
            intervalMs: streamTls.intervalMs,
            // A stream not served for want of its TLS copies is not renewed (see restoreTlsCopies).
            records: () => this.entries().flatMap((entry) => (entry.state === 'failed' ? [] : [entry.record])),
            put: (spec, ifSpec) => this.put(spec, ifSpec),
            record: (port, result, detail, message) =>
              options.observatory?.record({
                actor: 'daemon',
                remote: '',
                action: 'tls-renewal',
                ports: [port],
                detail,
                result,
                ...(message === undefined ? {} : { code: ErrorCode.InvalidInput, message }),
              }),
            log: options.log,
          });
  }

  /**
   * `spec` with its TLS files checked and copied (see stream-tls.ts); a 400 naming the field when
   * they cannot serve. Without a folder for them (unit tests), TLS files are refused.
   */
  private async withTls(spec: StreamSpec, dryRun = false): Promise<StreamSpec> {
    if (this.tlsCopies === undefined)
      throw new ConductorError(ErrorCode.NotSupported, 'TLS files are not available on this daemon');
    return this.tlsCopies.prepare(spec, dryRun);
  }

  /** Runs `change` on `specs` (as withTls made them); a refused change leaves no copy unused. */
  private async keepingCopies<T>(specs: StreamSpec[], change: () => Promise<T>): Promise<T> {
    let refused = true;
    try {
      const result = await change();
      refused = false;
      return result;
    } finally {
      await this.tlsCopies?.release(specs, refused);
    }
  }

  /** One look at every stream's TLS files, now (the loop does it every interval). */
  lookAtTlsFiles(): Promise<void> {
    return this.tlsRenewals?.look() ?? Promise.resolve();
  }

  /** Loads the store, adopts old-format files, drops expired streams, brings every nginx in line. */
  async start(): Promise<void> {
    const { store, instances, portRange, log } = this.options;
    const loaded = await store.load();
    this.problems.push(...loaded.problems);
    // Status lists them too; the log is where an operator looks first after a restart.
    for (const problem of loaded.problems) log.warn('store entry skipped', { problem });
    const records = new Map(loaded.records.map((record) => [record.port, record]));
    const old = { folder: this.options.legacyFolder, streamPrefix: this.options.streamPrefix, portRange };
    const { adopted, problems } = await adoptOldFiles(old, new Set(records.keys()), this.now, log);
    this.problems.push(...problems);
    for (const record of adopted) records.set(record.port, record);
    if (adopted.length > 0) await store.commit({ put: adopted, remove: [] });
    await dropExpired(records, store, this.now(), log);
    const tlsFailed = await this.restoreTlsCopies(records);
    const served: StreamRecord[] = [];
    for (const record of records.values()) {
      const tlsReason = tlsFailed.get(record.port);
      if (tlsReason !== undefined) {
        // Its copies are gone and cannot be made again: nginx is not given it (a configuration
        // naming a missing file would be refused whole), every other stream is served.
        this.parked.set(record.port, { record, state: 'failed', reason: tlsReason });
        this.problems.push(`stream on port ${formatPorts(record)} is not served: ${tlsReason}`);
        continue;
      }
      if (record.drainingUntil !== undefined) {
        // It drained when the daemon stopped: its port stays closed; the loop ends the drain.
        this.parked.set(record.port, { record, state: 'draining' });
        continue;
      }
      if (isPortInRange(record.port, portRange) && isPortInRange(lastPort(record), portRange)) {
        served.push(record);
        continue;
      }
      const reason = `port ${formatPorts(record)} is outside PORT_RANGE ${formatPortRange(portRange)}`;
      this.parked.set(record.port, { record, state: 'failed', reason });
      this.problems.push(`stream on port ${record.port} is not served: ${reason}`);
    }
    const byInstance = await this.placement.assign(served);
    for (const instance of instances) instance.load(byInstance.get(instance) ?? []);
    await Promise.all(instances.map((instance) => instance.start()));
    if (instances.length > 1) await Promise.all(instances.map((instance) => instance.reviveHeldPorts(3000)));
    this.expiry.start();
    this.drains.start();
    this.tlsRenewals?.start();
  }

  /**
   * Makes again the TLS copies of stored streams that lost them (see restoreCopies), storing the new
   * material of one whose files were renewed meanwhile; answers the streams that cannot be served,
   * with why.
   */
  private async restoreTlsCopies(records: Map<number, StreamRecord>): Promise<Map<number, string>> {
    const failed = new Map<number, string>();
    const streamTls = this.options.streamTls;
    if (streamTls === undefined) return failed;
    const renewed: StreamRecord[] = [];
    for (const record of records.values()) {
      if (record.tlsMaterial === undefined) continue;
      try {
        const material = await restoreCopies(record, streamTls.dir, this.now(), streamTls.allowedDirs);
        if (material === undefined) continue;
        this.options.log.warn("a stream's TLS copies were missing; made again from the operator's files", {
          port: record.port,
        });
        if (material.id !== record.tlsMaterial.id) {
          const changed = { ...record, tlsMaterial: material };
          records.set(record.port, changed);
          renewed.push(changed);
        }
      } catch (error) {
        const reason = (error as Error).message;
        this.options.log.warn("a stream's TLS copies are missing and cannot be made again; it is not served", {
          port: record.port,
          error: reason,
        });
        failed.set(record.port, reason);
      }
    }
    if (renewed.length > 0) await this.options.store.commit({ put: renewed, remove: [] });
    return failed;
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

  /** The stream on `port`: keyed by it, or a range that holds it. */
  private entry(port: number): Entry | undefined {
    return this.parked.get(port) ?? this.placement.ownerOf(port)?.get(port) ?? coveringEntry(this.entries(), port);
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
    const view = entry.state === 'draining' ? this.drains.view(entry) : viewOf(entry);
    const tlsProblem = this.tlsRenewals?.problem(entry.record.port);
    if (tlsProblem !== undefined) view.tlsProblem = tlsProblem;
    const { record } = entry;
    const failures = this.options.observatory?.backendTls.of(portsOf(record), record.updatedAt ?? record.createdAt);
    if (failures !== undefined) view.backendTlsFailures = failures;
    return view;
  }

  /** A new stream's counts (traffic, failed backend handshakes) start from zero on each of its ports. */
  private startCounts(stream: { port: number; portEnd?: number }): void {
    for (const each of portsOf(stream)) {
      this.options.observatory?.traffic.reset(each);
      this.options.observatory?.backendTls.reset(each);
    }
  }

  /** Probes the backends of a stream now. */
  async checkHealth(port: number): Promise<StreamView> {
    const stream = this.get(port);
    if (!stream) throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
    await this.options.observatory?.health.check(port);
    return stream;
  }

  private answer(port: number, result: MutationResult): CreateResult {
    if (result.change === 'created') this.startCounts(result.entry?.record ?? { port });
    // What this change made live, even if a later change to the port was applied since.
    const stream = result.entry ? viewOf(result.entry) : this.get(port);
    if (!stream) throw new ConductorError(ErrorCode.Internal, `stream ${port} vanished after it was applied`);
    const change =
      result.change === 'created' || result.change === 'replaced' || result.change === 'unchanged'
        ? result.change
        : 'replaced';
    return { stream, warnings: result.warnings, change };
  }

  /** checkPort for each port of a spec, and no other stream on any of them (see ranges.ts). */
  private checkSpec(spec: StreamSpec): void {
    checkSpan(spec, this.options.portRange, this.entries());
    this.checkPort(spec.port);
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
  async create(given: StreamSpec): Promise<CreateResult> {
    // Without TLS files nothing is awaited before the change is submitted (its order among others holds).
    if (!hasTlsFiles(given)) return this.createPrepared(given);
    const spec = await this.withTls(given);
    return this.keepingCopies([spec], () => this.createPrepared(spec));
  }

  private async createPrepared(spec: StreamSpec): Promise<CreateResult> {
    if (spec.port === 0) return this.createOnFreePort(spec);
    this.checkSpec(spec);
    const result = await this.placement.onOwner(spec.port, (instance) =>
      instance.submit({ kind: 'create', record: stampRecord(spec, undefined, this.now()) }),
    );
    return this.answer(spec.port, result);
  }

  /**
   * Creates or replaces the stream on `spec.port`; a spec equal to the current one changes nothing.
   * With `ifSpec`, only while the port still holds that definition when the change is admitted.
   */
  async put(given: StreamSpec, ifSpec?: StreamRecord, spanNamed = false): Promise<CreateResult> {
    if (!hasTlsFiles(given)) return this.putPrepared(given, ifSpec, spanNamed);
    const spec = await this.withTls(given);
    return this.keepingCopies([spec], () => this.putPrepared(spec, ifSpec, spanNamed));
  }

  private async putPrepared(
    spec: StreamSpec,
    ifSpec: StreamRecord | undefined,
    spanNamed: boolean,
  ): Promise<CreateResult> {
    this.checkSpec(spec);
    const result = await this.placement.onOwner(spec.port, (instance) =>
      instance.submit({
        kind: 'put',
        record: stampRecord(spec, instance.get(spec.port)?.record, this.now()),
        ...(ifSpec === undefined ? {} : { ifSpec }),
        spanNamed,
      }),
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

  /**
   * Extends (or shortens) the life of a stream; resolves once recorded. Renewals of one port run
   * one after another (routeTurns: each reads the definition the one before it left; put conditionally on
   * what it read, several at once would be admitted in one batch against the same definition, and
   * all but one refused), so several asked at once are each taken.
   */
  renew(port: number, expiresAt: string | undefined): Promise<CreateResult> {
    return this.routeTurns.run(port, () => this.renewNow(port, expiresAt));
  }

  private async renewNow(port: number, expiresAt: string | undefined): Promise<CreateResult> {
    // Only the lifetime changes: the put holds on condition that the definition is still the one
    // read here, so a change admitted first (a TLS renewal, say) is kept, and its result renewed.
    for (let attempt = 1; ; attempt += 1) {
      const entry = this.entry(port);
      // A parked stream (draining, or not running) has no lifetime to renew.
      if (!entry || this.parked.has(port))
        throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
      try {
        return await this.put(renewedSpec(entry.record, expiresAt), entry.record);
      } catch (error) {
        // A change admitted before this one in its batch refuses it at once, before that change
        // is applied (the port still shows what was read): the next try is admitted after it.
        const inFlight = error instanceof ConductorError && error.code === ErrorCode.Conflict;
        if (!(inFlight || this.changedMeanwhile(error, port, entry.record)) || attempt >= 5) throw error;
      }
    }
  }

  /**
   * Whether a conditional put based on `read` (undefined: the port was free) was refused because
   * the port's definition changed meanwhile: then the caller reads again and retries.
   */
  private changedMeanwhile(error: unknown, port: number, read: StreamRecord | undefined): boolean {
    if (!(error instanceof ConductorError)) return false;
    if (error.code !== ErrorCode.Conflict && error.code !== ErrorCode.StreamExists) return false;
    const now = this.entry(port)?.record;
    return read === undefined ? now !== undefined : now === undefined || !sameSpec(now, read);
  }

  addRoute(port: number, route: RouteSpec): Promise<CreateResult> {
    return this.routeTurns.run(port, () => this.addRouteNow(port, route));
  }

  removeRoute(
    port: number,
    id: string,
  ): Promise<{ removed: 'route' | 'stream'; result?: CreateResult; warnings: string[] }> {
    return this.routeTurns.run(port, () => this.removeRouteNow(port, id));
  }

  private async addRouteNow(port: number, route: RouteSpec): Promise<CreateResult> {
    // As renew: the put holds only while the port keeps the definition read here (another change
    // admitted first, a PUT or an apply, is kept, and this route added to its result).
    for (let attempt = 1; ; attempt += 1) {
      // A parked stream (draining, or not running) is found here too: put and create answer for it.
      const entry = this.entry(port);
      try {
        if (!entry) return await this.create(portWithRoute(port, route));
        return await this.put(withRoute(entry.record, route, port), entry.record);
      } catch (error) {
        if (!this.changedMeanwhile(error, port, entry?.record) || attempt >= 5) throw error;
      }
    }
  }

  private async removeRouteNow(
    port: number,
    id: string,
  ): Promise<{ removed: 'route' | 'stream'; result?: CreateResult; warnings: string[] }> {
    for (let attempt = 1; ; attempt += 1) {
      const entry = this.entry(port);
      if (!entry) throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
      const rest = withoutRoute(entry.record, id, port);
      try {
        // The last route: the port goes, on condition that it still holds what was read here.
        if (rest === undefined) return { removed: 'stream', ...(await this.remove(port, { ifSpec: entry.record })) };
        const result = await this.put(rest, entry.record);
        return { removed: 'route', result, warnings: result.warnings ?? [] };
      } catch (error) {
        // A change admitted before this one in its batch refuses it at once, before that change
        // is applied (the port still shows what was read): the next try is admitted after it.
        const inFlight = error instanceof ConductorError && error.code === ErrorCode.Conflict;
        if (!(inFlight || this.changedMeanwhile(error, port, entry.record)) || attempt >= 5) throw error;
      }
    }
  }

  private async removeParked(port: number): Promise<{ warnings: string[] }> {
    await this.options.store.commit({ put: [], remove: [port] });
    this.parked.delete(port);
    return { warnings: [] };
  }

  /** Removes a stream; resolves once its port refuses new connections. */
  async remove(
    port: number,
    options: { killSessions?: boolean; ifSpec?: StreamRecord } = {},
  ): Promise<{ warnings: string[] }> {
    refuseRangePart(this.entry(port), port, 'rm');
    const parked = this.parked.get(port);
    if (options.ifSpec !== undefined && parked !== undefined)
      throw new ConductorError(ErrorCode.Conflict, `stream ${port} is ${parked.state}: its routes cannot change now`, {
        hint: parked.state === 'draining' ? `call the drain off first: conductor drain ${port} --cancel` : undefined,
      });
    if (this.drains.isDraining(port)) return this.drains.remove(port, options.killSessions === true);
    if (this.parked.has(port)) return this.removeParked(port);
    if (!isPortInRange(port, this.options.portRange) || !this.placement.ownerOf(port)) {
      throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
    }
    const result = await this.placement.onOwner(port, (instance) =>
      instance.submit({
        kind: 'remove',
        port,
        killSessions: options.killSessions === true,
        ...(options.ifSpec === undefined ? {} : { ifSpec: options.ifSpec }),
      }),
    );
    return { warnings: result.warnings };
  }

  /**
   * Drains a stream: its port refuses new connections (answered once the kernel does), its open
   * TCP sessions go on, and it is removed when the last one ends or, at `timeoutMs` from now (its
   * expiry at the latest), its sessions are cut. See drain.ts.
   */
  async drain(port: number, timeoutMs: number): Promise<DrainAnswer> {
    return { stream: await this.drainUntil(port, new Date(this.now().getTime() + timeoutMs)) };
  }

  /** A drain until `deadline` (its expiry at the latest): a fleet's hosts drain to the one deadline. */
  drainUntil(port: number, deadline: Date): Promise<StreamView> {
    refuseRangePart(this.entry(port), port, 'drain');
    return this.drains.drain(port, deadline);
  }

  /** Calls a drain off: the port takes connections again (answered once it does). */
  undrain(port: number): Promise<CreateResult> {
    return this.drains.undrain(port);
  }

  /** One look of the drain loop at every draining port, now (the loop does it every interval). */
  lookAtDrains(): Promise<void> {
    return this.drains.look();
  }

  /** What applying `specs` would change (see apply). */
  plan(specs: StreamSpec[], prune: boolean): ApplyPlan {
    const live = this.entries().filter((entry) => !this.parked.has(entry.record.port));
    return planApply(
      specs,
      prune,
      (port) => {
        const entry = this.entry(port);
        // A draining stream the file lists as it is stays as it is (it drains on).
        return entry ? { record: specOf(entry.record), live: entry.state !== 'failed' } : undefined;
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
  async apply(
    given: StreamSpec[],
    options: { prune: boolean; dryRun: boolean; spanNamed?: ReadonlySet<number> },
  ): Promise<ApplyResult> {
    const specs: StreamSpec[] = [];
    const prepared: StreamSpec[] = [];
    return this.keepingCopies(prepared, async () => {
      for (const [index, spec] of given.entries()) {
        if (!hasTlsFiles(spec)) {
          specs.push(spec);
          continue;
        }
        const withMaterial = await this.withSetTls(index, spec, options.dryRun);
        if (!options.dryRun) prepared.push(withMaterial);
        specs.push(withMaterial);
      }
      return this.applyPrepared(specs, options);
    });
  }

  /**
   * Checks the TLS files of a set as an apply (or its dry run) here does, copying nothing: a 400
   * naming `streams[i]` and the field. Fleet mode's apply checks them on the host taking the call.
   */
  async checkSetTls(given: StreamSpec[]): Promise<void> {
    for (const [index, spec] of given.entries()) if (hasTlsFiles(spec)) await this.withSetTls(index, spec, true);
  }

  /** withTls for the `index`th stream of a set: a refusal names it. */
  private async withSetTls(index: number, spec: StreamSpec, dryRun: boolean): Promise<StreamSpec> {
    try {
      return await this.withTls(spec, dryRun);
    } catch (error) {
      if (error instanceof ConductorError && error.code === ErrorCode.InvalidInput)
        throw new ConductorError(ErrorCode.InvalidInput, `streams[${index}].${error.message}`);
      throw error;
    }
  }

  private async applyPrepared(
    specs: StreamSpec[],
    options: { prune: boolean; dryRun: boolean; spanNamed?: ReadonlySet<number> },
  ): Promise<ApplyResult> {
    const plan = this.plan(specs, options.prune);
    const unchanged = new Set(plan.unchanged);
    const spanNamed = (port: number): boolean => options.spanNamed?.has(port) === true;
    checkStreamSet(specs, (port, spec) => {
      if (unchanged.has(port)) return;
      this.checkSpec(spec);
      // The rule admission applies, also to a dry run (which admission never sees).
      refuseSilentShrink(this.entry(port)?.record, spec, spanNamed(port));
    });
    if (options.dryRun) return { dryRun: true, applied: false, plan, warnings: [] };
    const changed = new Set([...plan.create, ...plan.update]);
    const warnings = await this.applyChanges(
      specs.filter((spec) => changed.has(spec.port)),
      plan.delete,
      spanNamed,
    );
    return { dryRun: false, applied: true, plan, warnings };
  }

  /**
   * Puts `puts` and removes `deletes` in one verified reload per nginx instance, all or nothing:
   * when any part is refused, the parts already applied are put back and the error is thrown.
   * Answers the warnings.
   */
  async applyChanges(
    given: StreamSpec[],
    deletes: number[],
    // The fleet's converge applies the fleet's definitions as they are.
    spanNamed: (port: number) => boolean = () => true,
  ): Promise<string[]> {
    const puts: StreamSpec[] = [];
    const prepared: StreamSpec[] = [];
    return this.keepingCopies(prepared, async () => {
      for (const spec of given) {
        if (!hasTlsFiles(spec)) puts.push(spec);
        else {
          const withMaterial = await this.withTls(spec);
          prepared.push(withMaterial);
          puts.push(withMaterial);
        }
      }
      return this.applyPuts(puts, deletes, spanNamed);
    });
  }

  private async applyPuts(
    puts: StreamSpec[],
    deletes: number[],
    spanNamed: (port: number) => boolean,
  ): Promise<string[]> {
    for (const spec of puts) this.checkSpec(spec);
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
      // A drain that began after the check above would be undone by this apply.
      const draining = ports.find((port) => this.drains.isDraining(port));
      if (draining !== undefined) this.checkPort(draining);
      const parts = groupChanges(
        slots.map(([port, slot]) => [port, slot.instance] as const),
        (port, existing) => {
          const spec = bySpec.get(port);
          return spec ? stampRecord(spec, existing, this.now()) : undefined;
        },
        spanNamed,
      );
      warnings = await applyAllOrNothing(parts, this.options.log);
    } finally {
      for (const [port, slot] of slots) this.placement.release(port, slot);
    }
    for (const port of created) this.startCounts(bySpec.get(port) ?? { port });
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
    this.tlsRenewals?.stop();
    this.expiry.stop();
    await this.drains.stop();
    await Promise.all(this.options.instances.map((instance) => instance.close()));
  }
}
