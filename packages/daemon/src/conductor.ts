/**
 * The daemon's one entry point for what the APIs do: it validates requests, routes each port to
 * the nginx instance that owns it, allocates free ports, runs declarative applies, removes expired
 * streams, and answers lists and status. At start-up it loads the store, takes over old-format
 * files, drops what expired while it was down, and has every instance bring nginx in line.
 */
import {
  type ApplyPlan,
  type ApplyResult,
  ConductorError,
  type CreateResult,
  type DaemonStatus,
  ErrorCode,
  type NginxMode,
  type NginxStatus,
  type PortRange,
  type StreamRecord,
  type StreamSpec,
  type StreamView,
  assertPortInRange,
  describeBackends,
  formatPortRange,
  isPortInRange,
  parsePort,
  protocolsOf,
  sameSpec,
} from '@stream-conductor/shared';
import type { Logger } from './log.js';
import type { Entry, MutationResult, NginxInstance, PortChange } from './nginx/instance.js';
import { StreamFiles } from './nginx/stream-files.js';
import type { Observatory } from './observe/observatory.js';
import type { StreamStore } from './streams/store.js';
import type { PortProbe } from './sys/ports.js';

export interface ConductorOptions {
  version: string;
  mode: NginxMode;
  portRange: PortRange;
  store: StreamStore;
  instances: NginxInstance[];
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
}

/**
 * What the APIs ask of the daemon. The Conductor does it on this host; in fleet mode the
 * FleetConductor (fleet/) does it through the shared store and converges this host with it.
 */
export interface StreamService {
  create(spec: StreamSpec): Promise<CreateResult>;
  put(spec: StreamSpec): Promise<CreateResult>;
  renew(port: number, expiresAt: string | undefined): Promise<CreateResult>;
  remove(port: string | number, options?: { killSessions?: boolean }): Promise<{ warnings: string[] }>;
  plan(specs: StreamSpec[], prune: boolean): ApplyPlan;
  apply(specs: StreamSpec[], options: { prune: boolean; dryRun: boolean }): Promise<ApplyResult>;
  freePort(): Promise<number | undefined>;
  list(filter?: ListFilter): StreamView[];
  get(port: number): StreamView | undefined;
  checkHealth(port: number): Promise<StreamView>;
  status(): DaemonStatus;
  close(): Promise<void>;
}

export interface ListFilter {
  /** Every label must match. */
  labels?: Array<[string, string]>;
}

/** Refuses a set of streams that names a port twice, or a port `check` refuses. */
export function checkStreamSet(specs: StreamSpec[], check: (port: number) => void): void {
  const seen = new Set<number>();
  for (const spec of specs) {
    if (seen.has(spec.port)) throw new ConductorError(ErrorCode.InvalidInput, `port ${spec.port} appears twice in the set`);
    seen.add(spec.port);
    check(spec.port);
  }
}

/**
 * What applying `specs` changes: `current(port)` is the stream that stands on a port and whether
 * it runs as it should; `existing` is every port with a stream (deleted when `prune`).
 */
export function planApply(
  specs: StreamSpec[],
  prune: boolean,
  current: (port: number) => { record: StreamSpec; live: boolean } | undefined,
  existing: Iterable<number>,
  defaultListenAddress?: string,
): ApplyPlan {
  const plan: ApplyPlan = { create: [], update: [], delete: [], unchanged: [] };
  const wanted = new Set<number>();
  for (const spec of specs) {
    wanted.add(spec.port);
    const now = current(spec.port);
    // As the apply itself refuses it (a live stream keeps its listening socket through a change).
    if (now?.live && (now.record.listenAddress ?? defaultListenAddress) !== (spec.listenAddress ?? defaultListenAddress)) {
      throw new ConductorError(ErrorCode.Conflict, `port ${spec.port}: a live stream cannot move to another listen address in place`, {
        hint: 'remove the stream, then create it with the new address',
      });
    }
    if (!now) plan.create.push(spec.port);
    else if (!now.live || !sameSpec(now.record, spec)) plan.update.push(spec.port);
    else plan.unchanged.push(spec.port);
  }
  if (prune) for (const port of existing) if (!wanted.has(port)) plan.delete.push(port);
  for (const list of [plan.create, plan.update, plan.delete, plan.unchanged]) list.sort((a, b) => a - b);
  return plan;
}

/** The status of several masters as one: the worst state, the sums, the newest events. */
export function aggregateNginx(statuses: NginxStatus[]): NginxStatus {
  const first = statuses[0];
  if (statuses.length === 1 && first) return first;
  const state = statuses.some((status) => status.state === 'down') ? 'down' : statuses.some((status) => status.state === 'starting') ? 'starting' : 'running';
  const result: NginxStatus = { state, restarts: statuses.reduce((sum, status) => sum + status.restarts, 0) };
  if (first?.pid !== undefined) result.pid = first.pid;
  const reloads = statuses.flatMap((status) => (status.lastReload ? [status.lastReload] : [])).sort((a, b) => a.at.localeCompare(b.at));
  const last = reloads[reloads.length - 1];
  if (last) result.lastReload = last;
  const messages = statuses.flatMap((status, id) => (status.message ? [`nginx ${id}: ${status.message}`] : []));
  if (messages.length > 0) result.message = messages.join('; ');
  const incidents = statuses
    .flatMap((status, id) => (status.incidents ?? []).map((incident) => ({ at: incident.at, message: `nginx ${id}: ${incident.message}` })))
    .sort((a, b) => a.at.localeCompare(b.at))
    .slice(-20);
  if (incidents.length > 0) result.incidents = incidents;
  const audits = statuses.flatMap((status) => (status.audit ? [status.audit] : []));
  if (audits.length > 0) {
    result.audit = {
      at: audits.map((audit) => audit.at).sort()[0] ?? '',
      inLine: audits.every((audit) => audit.inLine),
      missing: audits.flatMap((audit) => audit.missing).sort((a, b) => a - b),
      extra: audits.flatMap((audit) => audit.extra).sort((a, b) => a - b),
      workers: audits.reduce((sum, audit) => sum + audit.workers, 0),
      strays: audits.reduce((sum, audit) => sum + audit.strays, 0),
      straysEnded: audits.reduce((sum, audit) => sum + audit.straysEnded, 0),
    };
  }
  return result;
}

function view(entry: Entry): StreamView {
  const stream: StreamView = { ...entry.record, state: entry.state };
  if (entry.reason !== undefined) stream.reason = entry.reason;
  return stream;
}

export class Conductor implements StreamService {
  /** Stored definitions no instance serves (outside PORT_RANGE since a configuration change). */
  private readonly parked = new Map<number, Entry>();
  private readonly problems: string[] = [];
  private readonly startedAt = new Date().toISOString();
  private readonly now: () => Date;
  /** Ports an automatic allocation is trying right now. */
  private readonly reserved = new Set<number>();
  private expiryTimer: NodeJS.Timeout | undefined;
  private readonly expiring = new Set<number>();

  constructor(private readonly options: ConductorOptions) {
    if (options.instances.length === 0) throw new Error('a conductor needs at least one nginx instance');
    this.now = options.now ?? (() => new Date());
  }

  /**
   * Which nginx instance serves each port that has a stream, or a change in flight. A stream
   * stays on the master that took it; a new one goes to the master that can reload soonest
   * (each master pauses about 100 ms after a reload), so that changes arriving together spread
   * over the masters instead of queueing behind one.
   */
  private readonly owners = new Map<number, { instance: NginxInstance; inflight: number }>();

  private ownerOf(port: number): NginxInstance | undefined {
    return this.owners.get(port)?.instance;
  }

  /** The instance that can take a new stream soonest; among equals, the one with fewest streams. */
  private soonest(): NginxInstance {
    const now = Date.now();
    let best = this.options.instances[0] as NginxInstance;
    let bestKey = [Number.POSITIVE_INFINITY, Number.POSITIVE_INFINITY];
    for (const instance of this.options.instances) {
      const key = [instance.expectedWaitMs(now), instance.list().length];
      if ((key[0] as number) < (bestKey[0] as number) || (key[0] === bestKey[0] && (key[1] as number) < (bestKey[1] as number))) {
        best = instance;
        bestKey = key;
      }
    }
    return best;
  }

  /** Runs `task` on the instance that owns `port` (placing the port when nothing owns it). */
  private async onOwner<T>(port: number, task: (instance: NginxInstance) => Promise<T>): Promise<T> {
    let slot = this.owners.get(port);
    if (!slot) {
      slot = { instance: this.soonest(), inflight: 0 };
      this.owners.set(port, slot);
    }
    slot.inflight += 1;
    try {
      return await task(slot.instance);
    } finally {
      slot.inflight -= 1;
      if (slot.inflight === 0 && !slot.instance.get(port)) this.owners.delete(port);
    }
  }

  /** Loads the store, adopts old-format files, drops expired streams, brings every nginx in line. */
  async start(): Promise<void> {
    const { store, instances, portRange, log } = this.options;
    const loaded = await store.load();
    this.problems.push(...loaded.problems);
    const records = new Map(loaded.records.map((record) => [record.port, record]));
    const adopted: StreamRecord[] = [];
    const legacy = new StreamFiles(this.options.legacyFolder, this.options.streamPrefix, { listenAddress: undefined });
    for (const { name, parsed } of (await legacy.scan()).legacy) {
      let problem: string | undefined;
      if ('error' in parsed) problem = parsed.error;
      else if (!isPortInRange(parsed.spec.port, portRange)) problem = `port ${parsed.spec.port} is outside PORT_RANGE ${formatPortRange(portRange)}`;
      else if (records.has(parsed.spec.port)) problem = `port ${parsed.spec.port} already has a stream in the store`;
      if (problem === undefined && 'spec' in parsed) {
        const record: StreamRecord = { ...parsed.spec, createdAt: this.now().toISOString() };
        records.set(record.port, record);
        adopted.push(record);
        await legacy.retireLegacy(name, 'adopted');
        log.info('adopted an old-format stream file', { file: name, port: record.port, backends: describeBackends(record.backends) });
      } else {
        await legacy.retireLegacy(name, 'rejected');
        this.problems.push(`old-format file ${name} was not adopted (kept as ${name}.rejected): ${problem ?? 'unknown'}`);
        log.warn('old-format stream file not adopted', { file: name, reason: problem });
      }
    }
    if (adopted.length > 0) await store.commit({ put: adopted, remove: [] });
    const expired = [...records.values()].filter((record) => this.isExpired(record));
    if (expired.length > 0) {
      await store.commit({ put: [], remove: expired.map((record) => record.port) });
      for (const record of expired) {
        records.delete(record.port);
        log.info('stream expired while the daemon was down', { port: record.port, expiresAt: record.expiresAt });
      }
    }
    // A stream stays with the master whose folder holds its file; the others are spread evenly.
    const byInstance = new Map<NginxInstance, StreamRecord[]>(instances.map((instance) => [instance, []]));
    const placed = new Map<number, NginxInstance>();
    for (const instance of instances) {
      for (const port of (await instance.files.scan()).ours) if (!placed.has(port)) placed.set(port, instance);
    }
    for (const record of records.values()) {
      if (!isPortInRange(record.port, portRange)) {
        const reason = `port ${record.port} is outside PORT_RANGE ${formatPortRange(portRange)}`;
        this.parked.set(record.port, { record, state: 'failed', reason });
        this.problems.push(`stream on port ${record.port} is not served: ${reason}`);
        continue;
      }
      const instance =
        placed.get(record.port) ?? [...byInstance.entries()].sort((a, b) => a[1].length - b[1].length)[0]?.[0] ?? (instances[0] as NginxInstance);
      byInstance.get(instance)?.push(record);
      this.owners.set(record.port, { instance, inflight: 0 });
    }
    for (const instance of instances) instance.load(byInstance.get(instance) ?? []);
    await Promise.all(instances.map((instance) => instance.start()));
    if (instances.length > 1) await Promise.all(instances.map((instance) => instance.reviveHeldPorts(3000)));
    this.expiryTimer = setInterval(() => this.expire(), this.options.expiryIntervalMs ?? 1000);
    this.expiryTimer.unref();
  }

  private isExpired(record: StreamRecord): boolean {
    return record.expiresAt !== undefined && Date.parse(record.expiresAt) <= this.now().getTime();
  }

  /**
   * Whether this host removes expired streams itself. A fleet's etcd removes them (their leases
   * end) while it answers; the host does it only when cut off from it.
   */
  private expiresLocally: () => boolean = () => true;

  setExpiryGate(gate: () => boolean): void {
    this.expiresLocally = gate;
  }

  /** Removes the streams whose time is up, each through the verified pipeline. */
  private expire(): void {
    if (!this.expiresLocally()) return;
    for (const entry of this.entries()) {
      const { record } = entry;
      if (!this.isExpired(record) || this.expiring.has(record.port)) continue;
      this.expiring.add(record.port);
      const removal = this.parked.has(record.port)
        ? this.removeParked(record.port)
        : this.onOwner(record.port, (instance) => instance.submit({ kind: 'remove', port: record.port }));
      removal
        .then(() => {
          this.options.log.info('stream expired and was removed', { port: record.port, expiresAt: record.expiresAt });
          this.options.observatory?.record({ actor: 'daemon', remote: '', action: 'expire', ports: [record.port], detail: `expired at ${record.expiresAt ?? ''}`, result: 'ok' });
        })
        .catch((error: unknown) => {
          // A renewal or removal that won the race is fine; anything else is tried again next round.
          if (!(error instanceof ConductorError && error.code === ErrorCode.NotFound)) {
            this.options.log.warn('expired stream could not be removed yet', { port: record.port, error });
          }
        })
        .finally(() => this.expiring.delete(record.port));
    }
  }

  private entries(): Entry[] {
    return [...this.parked.values(), ...this.options.instances.flatMap((instance) => instance.list())];
  }

  private entry(port: number): Entry | undefined {
    return this.parked.get(port) ?? this.ownerOf(port)?.get(port);
  }

  list(filter: ListFilter = {}): StreamView[] {
    const selected = this.entries().filter((entry) => (filter.labels ?? []).every(([key, value]) => entry.record.labels[key] === value));
    return selected.map(view).sort((a, b) => a.port - b.port);
  }

  get(port: number): StreamView | undefined {
    const entry = this.entry(port);
    return entry ? view(entry) : undefined;
  }

  /** Probes the backends of a stream now. */
  async checkHealth(port: number): Promise<StreamView> {
    const stream = this.get(port);
    if (!stream) throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
    await this.options.observatory?.health.check(port);
    return stream;
  }

  private record(spec: StreamSpec, existing: StreamRecord | undefined): StreamRecord {
    const now = this.now().toISOString();
    return existing ? { ...spec, createdAt: existing.createdAt, updatedAt: now } : { ...spec, createdAt: now };
  }

  private answer(port: number, result: MutationResult): CreateResult {
    if (result.change === 'created') this.options.observatory?.traffic.reset(port);
    // What this change made live, even if a later change to the port was applied since.
    const stream = result.entry ? view(result.entry) : this.get(port);
    if (!stream) throw new ConductorError(ErrorCode.Internal, `stream ${port} vanished after it was applied`);
    const change = result.change === 'created' || result.change === 'replaced' || result.change === 'unchanged' ? result.change : 'replaced';
    return { stream, warnings: result.warnings, change };
  }

  private checkPort(port: number): void {
    assertPortInRange(port, this.options.portRange);
    const parked = this.parked.get(port);
    if (parked) throw new ConductorError(ErrorCode.StreamExists, `port ${port} already has a stream (to ${describeBackends(parked.record.backends)})`);
  }

  /** Creates a stream (port 0: on a free port the daemon picks); resolves once it is live. */
  async create(spec: StreamSpec): Promise<CreateResult> {
    if (spec.port === 0) return this.createOnFreePort(spec);
    this.checkPort(spec.port);
    const result = await this.onOwner(spec.port, (instance) => instance.submit({ kind: 'create', record: this.record(spec, undefined) }));
    return this.answer(spec.port, result);
  }

  /** Creates or replaces the stream on `spec.port`; a spec equal to the current one changes nothing. */
  async put(spec: StreamSpec): Promise<CreateResult> {
    this.checkPort(spec.port);
    const result = await this.onOwner(spec.port, (instance) =>
      instance.submit({ kind: 'put', record: this.record(spec, instance.get(spec.port)?.record) }),
    );
    return this.answer(spec.port, result);
  }

  /**
   * Allocation that holds under concurrency: try the first port that looks free; when another
   * request or process won it meanwhile, the pipeline says so and the next port is tried.
   */
  private async createOnFreePort(spec: StreamSpec): Promise<CreateResult> {
    const { start, end } = this.options.portRange;
    for (let port = start; port <= end; port += 1) {
      if (this.reserved.has(port) || this.entry(port) !== undefined) continue;
      if ((await this.options.probePort(port, protocolsOf(spec), spec.listenAddress ?? this.options.defaultListenAddress)) !== 'free') continue;
      if (this.reserved.has(port) || this.entry(port) !== undefined) continue;
      this.reserved.add(port);
      try {
        const result = await this.onOwner(port, (instance) => instance.submit({ kind: 'create', record: this.record({ ...spec, port }, undefined) }));
        return this.answer(port, result);
      } catch (error) {
        if (error instanceof ConductorError && (error.code === ErrorCode.StreamExists || error.code === ErrorCode.PortInUse)) continue;
        throw error;
      } finally {
        this.reserved.delete(port);
      }
    }
    throw new ConductorError(ErrorCode.NoFreePort, 'no free port left in the port range', { hint: 'remove streams, or widen PORT_RANGE' });
  }

  /** Extends (or shortens) the life of a stream; resolves once recorded. */
  async renew(port: number, expiresAt: string | undefined): Promise<CreateResult> {
    const entry = this.entry(port);
    if (!entry || this.parked.has(port)) throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
    const { createdAt: _created, updatedAt: _updated, ...spec } = entry.record;
    const renewed: StreamSpec = { ...spec };
    if (expiresAt === undefined) delete renewed.expiresAt;
    else renewed.expiresAt = expiresAt;
    return this.put(renewed);
  }

  private async removeParked(port: number): Promise<{ warnings: string[] }> {
    await this.options.store.commit({ put: [], remove: [port] });
    this.parked.delete(port);
    return { warnings: [] };
  }

  /** Removes a stream; resolves once its port refuses new connections. */
  async remove(portText: string | number, options: { killSessions?: boolean } = {}): Promise<{ warnings: string[] }> {
    const port = parsePort(portText);
    if (this.parked.has(port)) return this.removeParked(port);
    if (!isPortInRange(port, this.options.portRange)) {
      throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
    }
    if (!this.ownerOf(port)) throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
    const result = await this.onOwner(port, (instance) => instance.submit({ kind: 'remove', port, killSessions: options.killSessions === true }));
    return { warnings: result.warnings };
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
    const ports = [...puts.map((spec) => spec.port), ...deletes.filter((port) => !bySpec.has(port) && this.ownerOf(port) !== undefined)];
    // Hold every port of the plan on its instance for the whole apply.
    const slots = ports.map((port) => {
      let slot = this.owners.get(port);
      if (!slot) {
        slot = { instance: this.soonest(), inflight: 0 };
        this.owners.set(port, slot);
      }
      slot.inflight += 1;
      return [port, slot] as const;
    });
    const warnings: string[] = [];
    try {
      const changes = new Map<NginxInstance, { forward: PortChange[]; backward: PortChange[] }>();
      for (const [port, { instance }] of slots) {
        const existing = instance.get(port)?.record;
        const spec = bySpec.get(port);
        const part = changes.get(instance) ?? { forward: [], backward: [] };
        part.forward.push({ port, record: spec ? this.record(spec, existing) : undefined });
        part.backward.push({ port, record: existing });
        changes.set(instance, part);
      }
      const done: Array<[NginxInstance, PortChange[]]> = [];
      try {
        for (const [instance, part] of changes) {
          const result = await instance.submit({ kind: 'group', changes: part.forward });
          warnings.push(...result.warnings);
          done.push([instance, part.backward]);
        }
      } catch (error) {
        for (const [instance, backward] of done.reverse()) {
          await instance.submit({ kind: 'group', changes: backward }).catch((undo: unknown) => {
            this.options.log.error('could not put back a part of a refused apply', { instance: instance.id, error: undo });
          });
        }
        throw error;
      }
    } finally {
      for (const [port, slot] of slots) {
        slot.inflight -= 1;
        if (slot.inflight === 0 && !slot.instance.get(port)) this.owners.delete(port);
      }
    }
    for (const port of created) this.options.observatory?.traffic.reset(port);
    return warnings;
  }

  /**
   * The first port of the range without a stream that no other process holds either. It is not
   * reserved: two callers may be told the same port, and the second create is refused.
   */
  async freePort(): Promise<number | undefined> {
    const { start, end } = this.options.portRange;
    for (let port = start; port <= end; port += 1) {
      if (this.entry(port) !== undefined || this.reserved.has(port)) continue;
      if ((await this.options.probePort(port, ['tcp'], this.options.defaultListenAddress)) === 'free') return port;
    }
    return undefined;
  }

  status(): DaemonStatus {
    const streams = this.list();
    const failed = streams.filter((stream) => stream.state === 'failed');
    const instances = this.options.instances.map((instance) => ({ ...instance.status(), id: instance.id, streams: instance.list().length }));
    return {
      version: this.options.version,
      mode: this.options.mode,
      portRange: { ...this.options.portRange },
      streams: { total: streams.length, live: streams.length - failed.length, failed: failed.length },
      nginx: aggregateNginx(instances),
      nginxInstances: instances,
      failed: failed.map((stream) => ({ port: stream.port, backends: describeBackends(stream.backends), reason: stream.reason ?? 'unknown' })),
      problems: [...this.problems],
      startedAt: this.startedAt,
    };
  }

  async close(): Promise<void> {
    if (this.expiryTimer) clearInterval(this.expiryTimer);
    await Promise.all(this.options.instances.map((instance) => instance.close()));
  }
}
