/**
 * Fleet mode: several edge hosts, one desired set of streams in etcd.
 *
 * Keys under the fleet's prefix:
 *   streams/<port>          the desired stream ({record, by, op}); a stream with an expiry is
 *                           attached to an etcd lease of that length, so that etcd itself removes
 *                           it on time, whichever daemon created it and whether it still runs
 *   hosts/<id>              each running host ({id, api, version, startedAt}), on its own lease,
 *                           kept alive while the daemon runs
 *   applied/<id>/<port>     what that host made of the stream ({state, reason, revision}), on the
 *                           host's lease
 *
 * A change through any host's API is written to etcd first, in a transaction that holds only if
 * the port's key is as the host last saw it (one stream per port across the fleet, allocation
 * atomic across hosts), then applied on this host through the same verified pipeline as ever
 * (the Conductor, with its local file as a cache to serve from without etcd). When this host
 * cannot apply it, the etcd write is undone and the error answered. Every host watches the prefix
 * and converges its own nginx to it, and reports what it applied.
 *
 * Without etcd a host keeps serving what it has, refuses changes (503), says so in its status, and
 * converges to the full desired set once etcd answers again.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ConsecutiveBreaker, circuitBreaker, handleWhen, retry } from 'cockatiel';
import { Etcd3, type IKeyValue, type Lease, type Watcher, isRecoverableError } from 'etcd3';
import {
  type ApplyPlan,
  type ApplyResult,
  ConductorError,
  type CreateResult,
  type DaemonStatus,
  ErrorCode,
  type FleetHost,
  type HostStreamState,
  type PortRange,
  type StreamRecord,
  type StreamSpec,
  type StreamView,
  assertPortInRange,
  describeBackends,
  isPortInRange,
  parsePort,
  protocolsOf,
  sameSpec,
} from '@stream-conductor/shared';
import type { StoreConfig } from '../config.js';
import type { Conductor, ListFilter, StreamService } from '../conductor.js';
import type { Logger } from '../log.js';
import { recordFromJson } from '../streams/record.js';
import type { PortProbe } from '../sys/ports.js';

type EtcdConfig = Extract<StoreConfig, { kind: 'etcd' }>;

export interface FleetOptions {
  local: Conductor;
  config: EtcdConfig;
  version: string;
  portRange: PortRange;
  probePort(port: number, protocols: Array<'tcp' | 'udp'>, listenAddress: string | undefined): Promise<PortProbe>;
  defaultListenAddress?: string | undefined;
  log: Logger;
  /** How often streams this host could not apply are tried again. */
  retryIntervalMs: number;
  now?: () => Date;
}

/** A desired stream as etcd holds it. */
interface Desired {
  record: StreamRecord;
  modRevision: string;
  /** The host and the operation that wrote it: a retried transaction recognizes its own write. */
  by: string;
  op: string;
}

interface AppliedReport {
  state: 'live' | 'failed';
  reason?: string;
  /** The mod revision of the desired key this report is about. */
  revision: string;
}

interface HostRecord {
  id: string;
  api: string;
  version: string;
  startedAt: string;
}

/** etcd's calls are bounded: an unreachable cluster is a refusal within seconds, not a hang. */
const CALL_TIMEOUT_MS = 5000;
const HOST_TTL_S = 10;
const SUPERVISE_MS = 1000;

const specOf = (record: StreamRecord): StreamSpec => {
  const { createdAt: _created, updatedAt: _updated, ...spec } = record;
  return spec;
};

function message(error: unknown): string {
  if (error instanceof ConductorError) return error.message;
  const text = (error as Error).message ?? String(error);
  // The client's fault handling skips members that failed just before: say what it means.
  if (/circuit breaker is open/i.test(text)) return 'no etcd member answers';
  return text.split('\n')[0] ?? text;
}

export class FleetConductor implements StreamService {
  private readonly client: Etcd3;
  private readonly prefix: string;
  private readonly hostId: string;
  private readonly now: () => Date;
  private readonly startedAt: string;

  private readonly desired = new Map<number, Desired>();
  private readonly hosts = new Map<string, HostRecord>();
  private readonly applied = new Map<string, Map<number, AppliedReport>>();
  /** What this host reported last, per port: a report is written only when it changes. */
  private readonly reported = new Map<number, string>();
  /** Desired streams this host could not apply, with the reason; tried again on a timer. */
  private readonly failures = new Map<number, string>();
  /** One convergence at a time per port, in order. */
  private readonly chains = new Map<number, Promise<unknown>>();
  /** Ports an automatic allocation is trying right now. */
  private readonly reserved = new Set<number>();

  private connected = false;
  private since: string;
  private lastError = 'not connected yet';
  private watcher: Watcher | undefined;
  private lease: Lease | undefined;
  private syncing: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly options: FleetOptions) {
    const { config } = options;
    this.prefix = config.prefix;
    this.hostId = config.hostId;
    this.now = options.now ?? (() => new Date());
    this.startedAt = this.now().toISOString();
    this.since = this.startedAt;
    this.client = new Etcd3({
      hosts: config.endpoints,
      dialTimeout: 3000,
      // Each call tries the next member once when one fails (a leader lost, a member down); a
      // member that failed three times in a row is skipped for a second. The daemon's own
      // supervision resyncs when etcd answers again.
      faultHandling: {
        host: () => circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: 1000, breaker: new ConsecutiveBreaker(3) }),
        global: retry(handleWhen(isRecoverableError), { maxAttempts: Math.max(2, config.endpoints.length) }),
      },
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + CALL_TIMEOUT_MS }),
      ...(config.tls
        ? {
            credentials: {
              rootCertificate: readFileSync(config.tls.ca),
              ...(config.tls.cert !== undefined && config.tls.key !== undefined
                ? { certChain: readFileSync(config.tls.cert), privateKey: readFileSync(config.tls.key) }
                : {}),
            },
          }
        : {}),
      ...(config.auth ? { auth: { username: config.auth.user, password: config.auth.password } } : {}),
    });
  }

  private key = {
    stream: (port: number): string => `${this.prefix}streams/${port}`,
    host: (id: string): string => `${this.prefix}hosts/${id}`,
    applied: (id: string, port: number): string => `${this.prefix}applied/${id}/${port}`,
  };

  // ---- start, supervision, sync --------------------------------------------------------------

  /** Serves what this host has, then joins the fleet (now, or as soon as etcd answers). */
  async start(): Promise<void> {
    await this.options.local.start();
    await this.sync().catch((error: unknown) => this.lost(error));
    this.timer = setInterval(() => void this.supervise(), SUPERVISE_MS);
    this.timer.unref();
    this.retryTimer = setInterval(() => this.retryFailures(), this.options.retryIntervalMs);
    this.retryTimer.unref();
  }

  private async supervise(): Promise<void> {
    if (this.closed || this.syncing) return;
    if (!this.connected) {
      await this.sync().catch((error: unknown) => this.lost(error));
      return;
    }
    try {
      await this.client.get(this.key.host(this.hostId)).exec();
    } catch (error) {
      this.lost(error);
    }
  }

  /** etcd stopped answering: keep serving, refuse changes, resync when it is back. */
  private lost(error: unknown): void {
    const reason = message(error);
    if (this.connected) {
      this.options.log.warn('lost the fleet store; serving what this host has until it answers again', { reason });
      this.since = this.now().toISOString();
    }
    this.connected = false;
    this.lastError = reason;
    void this.watcher?.cancel().catch(() => undefined);
    this.watcher = undefined;
  }

  /**
   * Joins the fleet: registers this host, reads the whole prefix, converges this host to it, and
   * watches every change after that revision.
   */
  private sync(): Promise<void> {
    this.syncing ??= (async () => {
      try {
        if (!this.lease || this.lease.revoked()) {
          const lease = this.client.lease(HOST_TTL_S);
          lease.on('lost', (error) => {
            if (this.lease === lease) this.lease = undefined;
            if (!this.closed) this.lost(error);
          });
          await lease.grant();
          this.lease = lease;
          this.reported.clear();
        }
        const host: HostRecord = { id: this.hostId, api: this.options.config.advertiseUrl, version: this.options.version, startedAt: this.startedAt };
        await this.lease.put(this.key.host(this.hostId)).value(JSON.stringify(host));
        const all = await this.client.getAll().prefix(this.prefix).exec();
        this.desired.clear();
        this.hosts.clear();
        this.applied.clear();
        for (const kv of all.kvs) this.take('put', kv);
        const watcher = await this.client
          .watch()
          .prefix(this.prefix)
          .startRevision(String(BigInt(all.header.revision) + 1n))
          .create();
        watcher.on('put', (kv) => this.take('put', kv, true));
        watcher.on('delete', (kv) => this.take('delete', kv, true));
        // A dropped watch stream is reopened by the client on another member, from the last revision
        // it saw; an error it cannot recover from ends the watch: resync.
        watcher.on('disconnected', (error) => this.options.log.debug('the watch of the fleet store reconnects', { reason: message(error) }));
        watcher.on('error', (error) => this.lost(error));
        this.watcher = watcher;
        if (!this.connected) this.options.log.info('joined the fleet', { host: this.hostId, streams: this.desired.size, hosts: this.hosts.size });
        this.connected = true;
        this.since = this.now().toISOString();
        this.lastError = '';
        // Converge every port either side knows of: what the fleet wants, and what this host has.
        const ports = new Set([...this.desired.keys(), ...this.options.local.list().map((stream) => stream.port)]);
        await Promise.all([...ports].map((port) => this.converge(port).catch(() => undefined)));
      } finally {
        this.syncing = undefined;
      }
    })();
    return this.syncing;
  }

  /** One key of the prefix seen (in the initial read or from the watch). */
  private take(kind: 'put' | 'delete', kv: IKeyValue, live = false): void {
    const key = kv.key.toString('utf8').slice(this.prefix.length);
    const parts = key.split('/');
    try {
      if (parts[0] === 'streams' && parts.length === 2) {
        const port = Number(parts[1]);
        if (!Number.isInteger(port)) return;
        if (kind === 'delete') this.desired.delete(port);
        else {
          const value = JSON.parse(kv.value.toString('utf8')) as { record: unknown; by?: string; op?: string };
          this.desired.set(port, { record: recordFromJson(value.record), modRevision: kv.mod_revision, by: value.by ?? '', op: value.op ?? '' });
        }
        if (live) void this.converge(port).catch(() => undefined);
      } else if (parts[0] === 'hosts' && parts.length === 2 && parts[1] !== undefined) {
        if (kind === 'delete') {
          this.hosts.delete(parts[1]);
          this.applied.delete(parts[1]);
          // This host's own registration gone (its lease expired): register again.
          if (live && parts[1] === this.hostId && !this.closed) this.lost(new Error('this host\'s registration expired'));
        } else this.hosts.set(parts[1], JSON.parse(kv.value.toString('utf8')) as HostRecord);
      } else if (parts[0] === 'applied' && parts.length === 3 && parts[1] !== undefined) {
        const port = Number(parts[2]);
        const reports = this.applied.get(parts[1]) ?? new Map<number, AppliedReport>();
        if (kind === 'delete') reports.delete(port);
        else reports.set(port, JSON.parse(kv.value.toString('utf8')) as AppliedReport);
        this.applied.set(parts[1], reports);
      }
    } catch (error) {
      this.options.log.warn('skipped a key of the fleet store that is not valid', { key, reason: message(error) });
    }
  }

  // ---- convergence ---------------------------------------------------------------------------

  private isExpired(record: StreamRecord): boolean {
    return record.expiresAt !== undefined && Date.parse(record.expiresAt) <= this.now().getTime();
  }

  /** The desired stream of a port, unless it has expired (etcd's lease removes it any moment). */
  private wanted(port: number): Desired | undefined {
    const desired = this.desired.get(port);
    return desired && !this.isExpired(desired.record) ? desired : undefined;
  }

  /** Brings this host's stream on `port` in line with the fleet's; rejects with the local error. */
  private converge(port: number, options: { killSessions?: boolean } = {}): Promise<string[]> {
    const previous = this.chains.get(port) ?? Promise.resolve();
    const run = previous.catch(() => undefined).then(() => this.convergeNow(port, options));
    this.chains.set(port, run);
    void run.catch(() => undefined).finally(() => {
      if (this.chains.get(port) === run) this.chains.delete(port);
    });
    return run;
  }

  private async convergeNow(port: number, options: { killSessions?: boolean }): Promise<string[]> {
    const desired = this.wanted(port);
    const local = this.options.local.get(port);
    if (!desired) {
      this.failures.delete(port);
      if (local) await this.options.local.remove(port, options).catch((error: unknown) => {
        if (!(error instanceof ConductorError && error.code === ErrorCode.NotFound)) throw error;
      });
      await this.report(port, undefined);
      return [];
    }
    if (!isPortInRange(port, this.options.portRange)) {
      const reason = `port ${port} is outside this host's PORT_RANGE`;
      this.failures.set(port, reason);
      await this.report(port, { state: 'failed', reason, revision: desired.modRevision });
      throw new ConductorError(ErrorCode.PortOutOfRange, reason);
    }
    let warnings: string[] = [];
    if (!local || local.state !== 'live' || !sameSpec(local, desired.record)) {
      try {
        warnings = (await this.options.local.put(specOf(desired.record))).warnings;
      } catch (error) {
        this.failures.set(port, message(error));
        await this.report(port, { state: 'failed', reason: message(error), revision: desired.modRevision });
        throw error;
      }
    }
    this.failures.delete(port);
    await this.report(port, { state: 'live', revision: desired.modRevision });
    return warnings;
  }

  /** Tells the fleet what this host made of a port (nothing when etcd is away: a resync does). */
  private async report(port: number, report: AppliedReport | undefined): Promise<void> {
    const text = report === undefined ? '' : JSON.stringify(report);
    if (this.reported.get(port) === text || !this.connected || !this.lease) return;
    try {
      if (report === undefined) await this.client.delete().key(this.key.applied(this.hostId, port));
      else await this.lease.put(this.key.applied(this.hostId, port)).value(text);
      this.reported.set(port, text);
    } catch (error) {
      this.options.log.warn('could not report to the fleet store', { port, reason: message(error) });
    }
  }

  private retryFailures(): void {
    if (!this.connected) return;
    for (const port of this.failures.keys()) void this.converge(port).catch(() => undefined);
  }

  // ---- writes --------------------------------------------------------------------------------

  private requireConnected(): void {
    if (this.connected) return;
    throw new ConductorError(ErrorCode.StoreUnavailable, `the fleet's store (etcd) is not reachable: ${this.lastError}`, {
      hint: 'this host keeps serving its streams; changes are taken again once etcd answers',
    });
  }

  private async value(record: StreamRecord, op: string): Promise<{ text: string; lease?: string }> {
    const text = JSON.stringify({ record, by: this.hostId, op });
    if (record.expiresAt === undefined) return { text };
    // etcd removes the stream when its lease ends: whole seconds, rounded up.
    const seconds = Math.max(1, Math.ceil((Date.parse(record.expiresAt) - this.now().getTime()) / 1000));
    const lease = this.client.lease(seconds, { autoKeepAlive: false });
    return { text, lease: await lease.grant() };
  }

  private putOp(port: number, value: { text: string; lease?: string }) {
    const builder = this.client.put(this.key.stream(port)).value(value.text);
    return value.lease === undefined ? builder : builder.lease(value.lease);
  }

  /** etcd's failure, as the API answers it. */
  private storeError(error: unknown): ConductorError {
    if (error instanceof ConductorError) return error;
    const text = message(error);
    if (/too many operations/i.test(text)) {
      return new ConductorError(ErrorCode.InvalidInput, 'the change holds more streams than etcd takes in one transaction', {
        hint: "raise etcd's --max-txn-ops (128 by default), or apply in smaller sets",
      });
    }
    // One failed call is not a lost store (the next may reach another member); the supervision's
    // look every second decides that.
    return new ConductorError(ErrorCode.StoreUnavailable, `the fleet's store (etcd) did not take the change: ${text}`, {
      hint: 'nothing was changed unless `conductor ls` shows it; try again',
    });
  }

  /**
   * Runs a transaction, etcd's failures made API errors. (The client retries a call whose answer
   * was lost; a retried transaction may then find its own first write, which is why every value
   * carries the operation that wrote it, and callers check for it.)
   */
  private async txn(build: () => Promise<{ succeeded: boolean; revision: string }>): Promise<{ succeeded: boolean; revision: string }> {
    try {
      return await build();
    } catch (error) {
      throw this.storeError(error);
    }
  }

  /** Reads a port's key now (not from the watch's copy, which may lag behind). */
  private async read(port: number): Promise<Desired | undefined> {
    let kv: IKeyValue | undefined;
    try {
      kv = (await this.client.get(this.key.stream(port)).exec()).kvs[0];
    } catch (error) {
      throw this.storeError(error);
    }
    if (!kv) return undefined;
    const value = JSON.parse(kv.value.toString('utf8')) as { record: unknown; by?: string; op?: string };
    return { record: recordFromJson(value.record), modRevision: kv.mod_revision, by: value.by ?? '', op: value.op ?? '' };
  }

  /**
   * Puts a port's key back as `previous`, if nobody changed it since this host's write (`revision`
   * its mod revision, or undefined when that write deleted it).
   */
  private async restore(port: number, revision: string | undefined, previous: Desired | undefined): Promise<void> {
    try {
      const cmp =
        revision === undefined ? this.client.if(this.key.stream(port), 'Create', '==', 0) : this.client.if(this.key.stream(port), 'Mod', '==', revision);
      if (previous === undefined) await cmp.then(this.client.delete().key(this.key.stream(port))).commit();
      else await cmp.then(this.putOp(port, await this.value(previous.record, previous.op))).commit();
    } catch (error) {
      this.options.log.error('could not undo a fleet change this host refused', { port, reason: message(error) });
    }
  }

  /** After an etcd write: apply it here; when this host refuses it, undo the write and answer why. */
  private async applyHere(port: number, written: Desired, previous: Desired | undefined): Promise<string[]> {
    // The watch may not have delivered this write yet; it may have delivered a later one.
    const cached = this.desired.get(port);
    if (!cached || BigInt(cached.modRevision) < BigInt(written.modRevision)) this.desired.set(port, written);
    try {
      return await this.converge(port);
    } catch (error) {
      await this.restore(port, written.modRevision, previous);
      if (previous) this.desired.set(port, previous);
      else this.desired.delete(port);
      await this.converge(port).catch(() => undefined);
      throw error;
    }
  }

  private answer(port: number, warnings: string[], change: CreateResult['change']): CreateResult {
    const stream = this.get(port);
    if (!stream) throw new ConductorError(ErrorCode.Internal, `stream ${port} vanished after it was applied`);
    return { stream, warnings, change };
  }

  async create(spec: StreamSpec): Promise<CreateResult> {
    if (spec.port === 0) return this.createOnFreePort(spec);
    assertPortInRange(spec.port, this.options.portRange);
    this.requireConnected();
    const claimed = await this.claim(spec);
    if (!claimed.ok) {
      throw new ConductorError(ErrorCode.StreamExists, `port ${spec.port} already has a stream (to ${describeBackends(claimed.existing.backends)})`, {
        hint: 'remove it first, pick another port, or replace it (PUT /v1/streams/{port})',
      });
    }
    const warnings = await this.applyHere(spec.port, claimed.written, undefined);
    return this.answer(spec.port, warnings, 'created');
  }

  /** Writes a new stream if the port has none in the fleet; answers the one there otherwise. */
  private async claim(spec: StreamSpec): Promise<{ ok: true; written: Desired } | { ok: false; existing: StreamRecord }> {
    const record: StreamRecord = { ...spec, createdAt: this.now().toISOString() };
    const op = randomUUID();
    const value = await this.value(record, op);
    const key = this.key.stream(spec.port);
    const result = await this.txn(async () => {
      const response = await this.client.if(key, 'Create', '==', 0).then(this.putOp(spec.port, value)).commit();
      return { succeeded: response.succeeded, revision: response.header.revision };
    });
    if (result.succeeded) return { ok: true, written: { record, modRevision: result.revision, by: this.hostId, op } };
    const existing = await this.read(spec.port);
    if (existing && existing.op === op) return { ok: true, written: existing }; // our own, retried
    if (!existing) return this.claim(spec); // removed meanwhile
    return { ok: false, existing: existing.record };
  }

  async put(spec: StreamSpec): Promise<CreateResult> {
    assertPortInRange(spec.port, this.options.portRange);
    this.requireConnected();
    const previous = await this.read(spec.port);
    if (previous && sameSpec(previous.record, spec) && !this.isExpired(previous.record)) {
      this.desired.set(spec.port, previous);
      const warnings = await this.converge(spec.port);
      return this.answer(spec.port, warnings, 'unchanged');
    }
    const now = this.now().toISOString();
    const record: StreamRecord = previous ? { ...spec, createdAt: previous.record.createdAt, updatedAt: now } : { ...spec, createdAt: now };
    const op = randomUUID();
    const value = await this.value(record, op);
    const key = this.key.stream(spec.port);
    const result = await this.txn(async () => {
      const guard = previous ? this.client.if(key, 'Mod', '==', previous.modRevision) : this.client.if(key, 'Create', '==', 0);
      const response = await guard.then(this.putOp(spec.port, value)).commit();
      return { succeeded: response.succeeded, revision: response.header.revision };
    });
    let written: Desired = { record, modRevision: result.revision, by: this.hostId, op };
    if (!result.succeeded) {
      const found = await this.read(spec.port);
      if (!found || found.op !== op) {
        throw new ConductorError(ErrorCode.Conflict, `port ${spec.port} was changed by another host meanwhile`, { hint: 'look at it again (conductor get) and retry' });
      }
      written = found;
    }
    const warnings = await this.applyHere(spec.port, written, previous);
    return this.answer(spec.port, warnings, previous ? 'replaced' : 'created');
  }

  async renew(port: number, expiresAt: string | undefined): Promise<CreateResult> {
    this.requireConnected();
    const current = await this.read(port);
    if (!current || this.isExpired(current.record)) throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
    const spec = specOf(current.record);
    if (expiresAt === undefined) delete spec.expiresAt;
    else spec.expiresAt = expiresAt;
    return this.put(spec);
  }

  async remove(portText: string | number, options: { killSessions?: boolean } = {}): Promise<{ warnings: string[] }> {
    const port = parsePort(portText);
    this.requireConnected();
    const previous = await this.read(port);
    if (!previous) {
      if (this.options.local.get(port)) return { warnings: await this.converge(port, options) };
      throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
    }
    const result = await this.txn(async () => {
      const response = await this.client.if(this.key.stream(port), 'Mod', '==', previous.modRevision).then(this.client.delete().key(this.key.stream(port))).commit();
      return { succeeded: response.succeeded, revision: response.header.revision };
    });
    if (!result.succeeded && (await this.read(port)) !== undefined) {
      throw new ConductorError(ErrorCode.Conflict, `port ${port} was changed by another host meanwhile`, { hint: 'look at it again (conductor get) and retry' });
    }
    this.desired.delete(port);
    return { warnings: await this.converge(port, options) };
  }

  private async createOnFreePort(spec: StreamSpec): Promise<CreateResult> {
    this.requireConnected();
    const { start, end } = this.options.portRange;
    for (let port = start; port <= end; port += 1) {
      if (this.reserved.has(port) || this.desired.has(port) || this.options.local.get(port) !== undefined) continue;
      if ((await this.options.probePort(port, protocolsOf(spec), spec.listenAddress ?? this.options.defaultListenAddress)) !== 'free') continue;
      if (this.reserved.has(port) || this.desired.has(port)) continue;
      this.reserved.add(port);
      try {
        const claimed = await this.claim({ ...spec, port });
        if (!claimed.ok) continue; // another host took it first
        try {
          const warnings = await this.applyHere(port, claimed.written, undefined);
          return this.answer(port, warnings, 'created');
        } catch (error) {
          if (error instanceof ConductorError && (error.code === ErrorCode.StreamExists || error.code === ErrorCode.PortInUse)) continue;
          throw error;
        }
      } finally {
        this.reserved.delete(port);
      }
    }
    throw new ConductorError(ErrorCode.NoFreePort, 'no free port left in the port range', { hint: 'remove streams, or widen PORT_RANGE' });
  }

  plan(specs: StreamSpec[], prune: boolean): ApplyPlan {
    const plan: ApplyPlan = { create: [], update: [], delete: [], unchanged: [] };
    const wanted = new Set<number>();
    for (const spec of specs) {
      wanted.add(spec.port);
      const current = this.wanted(spec.port);
      const local = this.options.local.get(spec.port);
      if (!current) plan.create.push(spec.port);
      else if (!sameSpec(current.record, spec) || !local || local.state !== 'live') plan.update.push(spec.port);
      else plan.unchanged.push(spec.port);
    }
    if (prune) for (const port of this.desired.keys()) if (!wanted.has(port) && this.wanted(port)) plan.delete.push(port);
    for (const list of [plan.create, plan.update, plan.delete, plan.unchanged]) list.sort((a, b) => a - b);
    return plan;
  }

  /**
   * A declarative apply across the fleet: one etcd transaction for the whole plan (it holds only
   * if no port of it changed meanwhile), then one all-or-nothing apply on this host; when this host
   * refuses, the transaction is undone.
   */
  async apply(specs: StreamSpec[], options: { prune: boolean; dryRun: boolean }): Promise<ApplyResult> {
    const seen = new Set<number>();
    for (const spec of specs) {
      if (seen.has(spec.port)) throw new ConductorError(ErrorCode.InvalidInput, `port ${spec.port} appears twice in the set`);
      seen.add(spec.port);
      assertPortInRange(spec.port, this.options.portRange);
    }
    this.requireConnected();
    // Plan against the store as it is now, not the watch's copy.
    const all = await this.client.getAll().prefix(`${this.prefix}streams/`).exec().catch((error: unknown) => {
      throw this.storeError(error);
    });
    for (const kv of all.kvs) this.take('put', kv);
    const plan = this.plan(specs, options.prune);
    if (options.dryRun) return { dryRun: true, applied: false, plan, warnings: [] };
    const bySpec = new Map(specs.map((spec) => [spec.port, spec]));
    const changed = [...plan.create, ...plan.update];
    const previous = new Map<number, Desired | undefined>([...changed, ...plan.delete].map((port) => [port, this.wanted(port)]));
    if (changed.length + plan.delete.length === 0) return { dryRun: false, applied: true, plan, warnings: [] };
    const now = this.now().toISOString();
    const op = randomUUID();
    const result = await this.txn(async () => {
      const compares = [...changed, ...plan.delete].map((port) => {
        const before = this.desired.get(port);
        return before ? { port, column: 'Mod' as const, value: before.modRevision } : { port, column: 'Create' as const, value: '0' };
      });
      const first = compares[0];
      if (!first) throw new Error('empty plan');
      let builder = this.client.if(this.key.stream(first.port), first.column, '==', first.value);
      for (const compare of compares.slice(1)) builder = builder.and(this.key.stream(compare.port), compare.column, '==', compare.value);
      const puts = [];
      for (const port of changed) {
        const spec = bySpec.get(port) as StreamSpec;
        const before = previous.get(port);
        const record: StreamRecord = before ? { ...spec, createdAt: before.record.createdAt, updatedAt: now } : { ...spec, createdAt: now };
        puts.push(this.putOp(port, await this.value(record, op)));
      }
      const deletes = plan.delete.map((port) => this.client.delete().key(this.key.stream(port)));
      const response = await builder.then(...puts, ...deletes).commit();
      return { succeeded: response.succeeded, revision: response.header.revision };
    });
    if (!result.succeeded) {
      const probe = changed[0] === undefined ? undefined : await this.read(changed[0]);
      if (!probe || probe.op !== op) {
        throw new ConductorError(ErrorCode.Conflict, 'streams of the set were changed by another host meanwhile; nothing was applied', {
          hint: 'run the apply again: it plans against the current state',
        });
      }
    }
    // Apply here, all or nothing; undo the transaction when this host refuses.
    const fresh = await this.client.getAll().prefix(`${this.prefix}streams/`).exec().catch(() => undefined);
    for (const kv of fresh?.kvs ?? []) this.take('put', kv);
    for (const port of plan.delete) this.desired.delete(port);
    try {
      const warnings = await this.options.local.applyChanges(
        changed.map((port) => specOf(this.desired.get(port)?.record ?? ({ ...(bySpec.get(port) as StreamSpec), createdAt: now } as StreamRecord))),
        plan.delete,
      );
      await Promise.all([...changed, ...plan.delete].map((port) => this.converge(port).catch(() => undefined)));
      return { dryRun: false, applied: true, plan, warnings };
    } catch (error) {
      for (const [port, before] of previous) {
        await this.restore(port, this.desired.get(port)?.modRevision, before);
        if (before) this.desired.set(port, before);
        else this.desired.delete(port);
      }
      await Promise.all([...previous.keys()].map((port) => this.converge(port).catch(() => undefined)));
      throw error;
    }
  }

  async freePort(): Promise<number | undefined> {
    const { start, end } = this.options.portRange;
    for (let port = start; port <= end; port += 1) {
      if (this.desired.has(port) || this.reserved.has(port) || this.options.local.get(port) !== undefined) continue;
      if ((await this.options.probePort(port, ['tcp'], this.options.defaultListenAddress)) === 'free') return port;
    }
    return undefined;
  }

  // ---- reads ---------------------------------------------------------------------------------

  /** How each running host reports a stream of the desired revision. */
  private hostStates(port: number, desired: Desired): HostStreamState[] {
    const states: HostStreamState[] = [];
    for (const id of [...this.hosts.keys()].sort()) {
      if (id === this.hostId) {
        const local = this.options.local.get(port);
        const failure = this.failures.get(port);
        if (local?.state === 'live' && sameSpec(local, desired.record)) states.push({ host: id, state: 'live' });
        else if (failure !== undefined) states.push({ host: id, state: 'failed', reason: failure });
        else states.push({ host: id, state: 'pending' });
        continue;
      }
      const report = this.applied.get(id)?.get(port);
      if (!report || BigInt(report.revision) < BigInt(desired.modRevision)) states.push({ host: id, state: 'pending' });
      else states.push({ host: id, state: report.state, ...(report.reason !== undefined ? { reason: report.reason } : {}) });
    }
    return states;
  }

  private viewOf(port: number): StreamView | undefined {
    const desired = this.wanted(port);
    const local = this.options.local.get(port);
    if (!desired) {
      if (!local) return undefined;
      return { ...local, reason: local.reason ?? 'not in the fleet\'s set: being removed', hosts: [] };
    }
    let view: StreamView;
    if (local && sameSpec(local, desired.record)) {
      view = { ...local, createdAt: desired.record.createdAt };
      if (desired.record.updatedAt !== undefined) view.updatedAt = desired.record.updatedAt;
    } else {
      view = { ...desired.record, state: 'failed', reason: this.failures.get(port) ?? 'not applied on this host yet' };
    }
    view.hosts = this.hostStates(port, desired);
    return view;
  }

  list(filter: ListFilter = {}): StreamView[] {
    const ports = new Set([...this.desired.keys(), ...this.options.local.list().map((stream) => stream.port)]);
    const views: StreamView[] = [];
    for (const port of ports) {
      const view = this.viewOf(port);
      if (view && (filter.labels ?? []).every(([key, value]) => view.labels[key] === value)) views.push(view);
    }
    return views.sort((a, b) => a.port - b.port);
  }

  get(port: number): StreamView | undefined {
    return this.viewOf(port);
  }

  async checkHealth(port: number): Promise<StreamView> {
    await this.options.local.checkHealth(port);
    const stream = this.get(port);
    if (!stream) throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
    return stream;
  }

  status(): DaemonStatus {
    const local = this.options.local.status();
    const streams = this.list();
    const failed = streams.filter((stream) => stream.state === 'failed');
    const hosts: FleetHost[] = [...this.hosts.values()]
      .map((host) => {
        const counts = { live: 0, failed: 0, pending: 0 };
        for (const stream of streams) {
          const state = stream.hosts?.find((entry) => entry.host === host.id)?.state;
          if (state !== undefined) counts[state] += 1;
        }
        return { id: host.id, api: host.api, version: host.version, startedAt: host.startedAt, ...counts };
      })
      .sort((a, b) => a.id.localeCompare(b.id));
    const { config } = this.options;
    return {
      ...local,
      streams: { total: streams.length, live: streams.length - failed.length, failed: failed.length },
      failed: failed.map((stream) => ({ port: stream.port, backends: describeBackends(stream.backends), reason: stream.reason ?? 'unknown' })),
      store: {
        kind: 'etcd',
        state: this.connected ? 'connected' : 'unreachable',
        since: this.since,
        ...(this.connected ? {} : { message: this.lastError }),
        hostId: this.hostId,
        endpoints: [...config.endpoints],
        prefix: config.prefix,
      },
      hosts,
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    if (this.retryTimer) clearInterval(this.retryTimer);
    await this.watcher?.cancel().catch(() => undefined);
    // Leaving the fleet: this host and its reports disappear at once rather than at the lease's end.
    if (this.connected) await this.lease?.revoke().catch(() => undefined);
    this.client.close();
    await this.options.local.close();
  }
}
