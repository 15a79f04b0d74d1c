/**
 * Fleet mode: several edge hosts, one desired set of streams in etcd.
 *
 * Keys under the fleet's prefix:
 *   streams/<port>          the desired stream ({record, by, op[, pending]}); a stream with an
 *                           expiry is attached to an etcd lease of that length, so that etcd
 *                           itself removes it on time, whichever daemon created it
 *   hosts/<id>              each running host ({id, api, version, startedAt}), on its own lease,
 *                           kept alive while the daemon runs
 *   applied/<id>/<port>     what that host made of the stream ({state, reason, revision}), on the
 *                           host's lease
 *
 * A change through any host's API goes in three steps, so that a change the host refuses is never
 * seen by the others and a change it acknowledges is in etcd:
 *   1. a transaction writes it as pending, guarded by the port's key as the host last read it
 *      (one stream per port across the fleet; allocation atomic across hosts). A pending value
 *      carries the state before it: the other hosts keep serving that state meanwhile;
 *   2. the host applies it to its own nginx through the verified pipeline (the Conductor, whose
 *      local file keeps what this host applied, to serve from without etcd);
 *   3. a second transaction commits it (or, when the host refused it, puts the state before back)
 *      if nobody changed the key since; then the others converge to it.
 * A writer that dies between 1 and 3 leaves a pending value that means the state before it.
 *
 * Every host watches the prefix, converges its nginx to it (one port at a time, in order), and
 * reports what it applied. Without etcd a host keeps serving what it has, refuses changes (503),
 * says so in its status, expires streams itself, and converges to the full set once etcd answers.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { ConsecutiveBreaker, circuitBreaker, handleWhen, isBrokenCircuitError, retry } from 'cockatiel';
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
  printable,
  protocolsOf,
  sameSpec,
} from '@stream-conductor/shared';
import { HOST_ID, type StoreConfig } from '../config/etcd.js';
import { type Conductor, type ListFilter, type StreamService, checkStreamSet, planApply } from '../conductor.js';
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
  /** How often streams this host could not apply (or report) are tried again. */
  retryIntervalMs: number;
  now?: () => Date;
  /**
   * Test hook (CONDUCTOR_TEST_FLEET_DEAF names a file): while that file exists, this host drops
   * the stream events its watch delivers, as a host whose watch lost them would.
   */
  deafFile?: string | undefined;
}

/** A change being written: the stream it makes (null: removed) and the state before it. */
interface Pending {
  previous: StreamRecord | null;
  remove: boolean;
  at: string;
}

/** A port's key as etcd holds it. */
interface Desired {
  record: StreamRecord;
  modRevision: string;
  /** The lease the key is attached to ('0': none). */
  lease: string;
  /** The host and operation that wrote it: a retried transaction recognizes its own write. */
  by: string;
  op: string;
  pending?: Pending;
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
/** How long a member that failed three calls in a row is skipped. */
const HALF_OPEN_MS = 1000;
const HOST_TTL_S = 10;
/**
 * How often a connected host checks itself against etcd: one read of the streams' keys and mod
 * revisions (no values) with its own registration, compared with what the watch has shown; and
 * every port's local state compared with what it should run.
 */
const SUPERVISE_MS = 1000;
/** A pending value older than this, or whose writer is gone, may be written over by a create. */
const PENDING_STALE_MS = 30_000;

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

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const newer = (a: string, b: string): boolean => BigInt(a) > BigInt(b);

/** The end of etcd's range of every key that starts with `prefix`. */
function prefixEnd(prefix: string): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i -= 1) {
    if ((end[i] as number) < 0xff) {
      end[i] = (end[i] as number) + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

function parseDesired(kv: IKeyValue, port: number): Desired {
  const value = JSON.parse(kv.value.toString('utf8')) as { record?: unknown; by?: unknown; op?: unknown; pending?: unknown };
  const record = recordFromJson(value.record);
  if (record.port !== port) throw new Error(`the record of port ${port} names port ${record.port}`);
  const desired: Desired = {
    record,
    modRevision: kv.mod_revision,
    lease: kv.lease,
    by: typeof value.by === 'string' ? value.by : '',
    op: typeof value.op === 'string' ? value.op : '',
  };
  if (value.pending !== undefined && value.pending !== null) {
    const pending = value.pending as { previous?: unknown; remove?: unknown; at?: unknown };
    const previous = pending.previous === null || pending.previous === undefined ? null : recordFromJson(pending.previous);
    if (previous !== null && previous.port !== port) throw new Error(`the state before a pending change of port ${port} names port ${previous.port}`);
    desired.pending = {
      previous,
      remove: pending.remove === true,
      at: typeof pending.at === 'string' ? pending.at : new Date(0).toISOString(),
    };
  }
  return desired;
}

// What other hosts wrote is shown to people and written to logs: bounded, printable text only.
const MAX_REASON = 1024;
const MAX_FIELD = 256;

function parseReport(text: string): AppliedReport {
  const value = JSON.parse(text) as Partial<AppliedReport>;
  if ((value.state !== 'live' && value.state !== 'failed') || typeof value.revision !== 'string' || !/^[0-9]+$/.test(value.revision)) {
    throw new Error('not a report');
  }
  return { state: value.state, revision: value.revision, ...(typeof value.reason === 'string' ? { reason: printable(value.reason, MAX_REASON) } : {}) };
}

function parseHost(text: string, id: string): HostRecord {
  const value = JSON.parse(text) as Partial<HostRecord> | null;
  if (value === null || typeof value !== 'object' || value.id !== id || typeof value.api !== 'string' || typeof value.version !== 'string' || typeof value.startedAt !== 'string') {
    throw new Error('not a host');
  }
  const startedAt = Number.isNaN(Date.parse(value.startedAt)) ? new Date(0).toISOString() : new Date(value.startedAt).toISOString();
  return { id, api: printable(value.api, MAX_FIELD), version: printable(value.version, MAX_FIELD), startedAt };
}

export class FleetConductor implements StreamService {
  private readonly client: Etcd3;
  private readonly prefix: string;
  private readonly hostId: string;
  private readonly now: () => Date;
  private readonly startedAt: string;

  private readonly desired = new Map<number, Desired>();
  /** Revision at which a port's key was seen deleted: an older value must not come back. */
  private readonly deletedAt = new Map<number, string>();
  private readonly hosts = new Map<string, HostRecord>();
  private readonly applied = new Map<string, Map<number, AppliedReport>>();
  /** What this host reported last, per port: a report is written only when it changes. */
  private readonly reported = new Map<number, string>();
  /** Ports whose report could not be written: tried again with the failures. */
  private readonly unreported = new Set<number>();
  /** Desired streams this host could not apply (or remove), with the reason; tried again. */
  private readonly failures = new Map<number, string>();
  /** This host's own changes in flight: the state it is applying, before the fleet sees it. */
  private readonly inflight = new Map<number, StreamRecord | null>();
  /** One convergence at a time per port, in order. */
  private readonly chains = new Map<number, Promise<unknown>>();
  /** Ports an automatic allocation is trying right now. */
  private readonly reserved = new Set<number>();
  private readonly problems: string[] = [];
  /** Stream keys that could not be read, by mod revision: the self-check does not count them as missed. */
  private readonly invalid = new Map<number, string>();
  /** The highest revision the watch (or a whole read) has shown this host. */
  private seenRevision = '0';
  /** Ports on which the last self-check found etcd and this host's copy apart (etcd's mod revision, or 'none'). */
  private suspects = new Map<number, string>();

  private connected = false;
  private since: string;
  private lastError = 'not connected yet';
  private watcher: Watcher | undefined;
  private lease: Lease | undefined;
  private syncing: Promise<void> | undefined;
  /** Bumped by every sync: the results of an abandoned one are dropped. */
  private generation = 0;
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
        host: () => circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: HALF_OPEN_MS, breaker: new ConsecutiveBreaker(3) }),
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
    // While etcd answers, its leases remove expired streams; cut off from it, this host does.
    options.local.setExpiryGate(() => !this.connected);
  }

  private key = {
    stream: (port: number): string => `${this.prefix}streams/${port}`,
    streams: (): string => `${this.prefix}streams/`,
    host: (id: string): string => `${this.prefix}hosts/${id}`,
    applied: (id: string, port: number): string => `${this.prefix}applied/${id}/${port}`,
  };

  // ---- the cache of the desired set, by revision ---------------------------------------------

  /** Takes a port's value if it is newer than what is known (a value or a deletion). */
  private remember(port: number, desired: Desired): void {
    const known = this.desired.get(port);
    const deleted = this.deletedAt.get(port);
    if (known && !newer(desired.modRevision, known.modRevision) && desired.modRevision !== known.modRevision) return;
    if (deleted !== undefined && !newer(desired.modRevision, deleted)) return;
    this.desired.set(port, desired);
    this.deletedAt.delete(port);
  }

  /** Forgets a port's value as of `revision`, unless a newer value is known. */
  private forget(port: number, revision: string): void {
    const known = this.desired.get(port);
    if (known && newer(known.modRevision, revision)) return;
    this.desired.delete(port);
    const deleted = this.deletedAt.get(port);
    if (deleted === undefined || newer(revision, deleted)) this.deletedAt.set(port, revision);
  }

  /** Takes a whole read of the streams at `revision`: every port it does not hold is gone. */
  private rememberAll(kvs: IKeyValue[], revision: string): void {
    const seen = new Set<number>();
    for (const kv of kvs) {
      const port = this.portOfStreamKey(kv.key.toString('utf8'));
      if (port === undefined) continue;
      try {
        this.remember(port, parseDesired(kv, port));
        this.invalid.delete(port);
        seen.add(port);
      } catch (error) {
        this.invalid.set(port, kv.mod_revision);
        this.options.log.warn('skipped a stream of the fleet store that is not valid', { port, reason: message(error) });
      }
    }
    for (const port of [...this.desired.keys()]) if (!seen.has(port)) this.forget(port, revision);
    for (const port of [...this.invalid.keys()]) if (!kvs.some((kv) => this.portOfStreamKey(kv.key.toString('utf8')) === port)) this.invalid.delete(port);
    this.saw(revision);
  }

  /** The watch (or a whole read) has shown everything up to `revision`. */
  private saw(revision: string): void {
    if (newer(revision, this.seenRevision)) this.seenRevision = revision;
  }

  private portOfStreamKey(key: string): number | undefined {
    const match = new RegExp(`^${this.key.streams().replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}([1-9][0-9]{0,4})$`).exec(key);
    if (!match) return undefined;
    const port = Number(match[1]);
    return port <= 65535 ? port : undefined;
  }

  // ---- start, supervision, sync --------------------------------------------------------------

  /** Serves what this host has, then joins the fleet (now, or as soon as etcd answers). */
  async start(): Promise<void> {
    await this.options.local.start();
    await this.sync().catch((error: unknown) => this.lost(error));
    this.timer = setInterval(() => void this.supervise(), SUPERVISE_MS);
    this.timer.unref();
    this.retryTimer = setInterval(() => this.retry(), this.options.retryIntervalMs);
    this.retryTimer.unref();
  }

  private async supervise(): Promise<void> {
    if (this.closed || this.syncing) return;
    if (!this.connected) {
      await this.sync().catch((error: unknown) => this.lost(error));
      return;
    }
    let missed: number[];
    try {
      missed = await this.selfCheck();
    } catch (error) {
      this.lost(error);
      return;
    }
    if (this.closed || !this.connected || this.syncing) return;
    if (missed.length > 0) {
      this.options.log.warn('the watch of the fleet store missed changes; reading it again', { ports: missed.slice(0, 20), seenRevision: this.seenRevision });
      await this.resync();
      return;
    }
    this.checkLocal();
  }

  /**
   * Compares this host's copy of the desired set with etcd's: one read of the streams' keys and
   * mod revisions (no values), in the same transaction as this host's registration (which also
   * tells that etcd answers). A port whose key differs, while the watch has shown everything up to
   * the read's revision or the same difference was there one check before, was missed. Answers
   * those ports.
   */
  private async selfCheck(): Promise<number[]> {
    const streams = this.key.streams();
    const response = await withTimeout(
      this.client.kv.txn({
        success: [
          { request_range: { key: Buffer.from(streams), range_end: prefixEnd(streams), keys_only: true } },
          { request_range: { key: Buffer.from(this.key.host(this.hostId)), keys_only: true } },
        ],
      }),
      CALL_TIMEOUT_MS,
      'check the fleet store',
    );
    const revision = response.header?.revision ?? '0';
    const kvs = response.responses?.[0]?.response_range?.kvs ?? [];
    const stored = new Map<number, string>();
    for (const kv of kvs) {
      const port = this.portOfStreamKey(Buffer.from(kv.key).toString('utf8'));
      if (port !== undefined) stored.set(port, kv.mod_revision);
    }
    const apart = new Map<number, string>();
    for (const [port, modRevision] of stored) {
      if (this.invalid.get(port) === modRevision) continue;
      const known = this.desired.get(port);
      if (known?.modRevision === modRevision) continue;
      // This host knows of something newer than the read (its own write, or the watch was quicker).
      if ((known && newer(known.modRevision, revision)) || newer(this.deletedAt.get(port) ?? '0', revision)) continue;
      apart.set(port, modRevision);
    }
    for (const [port, known] of this.desired) {
      if (stored.has(port) || newer(known.modRevision, revision)) continue;
      apart.set(port, 'none');
    }
    const caughtUp = !newer(revision, this.seenRevision);
    const missed = [...apart].filter(([port, what]) => caughtUp || this.suspects.get(port) === what).map(([port]) => port);
    this.suspects = apart;
    return missed;
  }

  /**
   * Brings every port whose local state is not what it should be (or whose report says otherwise)
   * in line, unless a change or retry of it runs. Catches a convergence that did not happen.
   */
  private checkLocal(): void {
    const ports = new Set([...this.desired.keys(), ...this.options.local.list().map((stream) => stream.port)]);
    for (const port of ports) {
      if (this.chains.has(port) || this.inflight.has(port) || this.reserved.has(port) || this.failures.has(port)) continue;
      const target = this.effective(port);
      const local = this.options.local.get(port);
      const inLine = target ? local?.state === 'live' && sameSpec(local, target) : local === undefined;
      const expected = target ? JSON.stringify({ state: 'live', revision: this.desired.get(port)?.modRevision ?? '0' }) : '';
      if (inLine && (this.reported.get(port) ?? '') === expected) continue;
      if (!inLine) this.options.log.warn('a stream of this host is not what the fleet wants; converging it', { port, wanted: target ? 'live' : 'none', here: local?.state ?? 'none' });
      void this.converge(port).catch(() => undefined);
    }
  }

  /** Drops the watch and joins the fleet again: a whole read, a new watch, every port converged. */
  private async resync(): Promise<void> {
    const watcher = this.watcher;
    this.watcher = undefined;
    if (watcher) void withTimeout(watcher.cancel(), 2000, 'cancel the watch').catch(() => undefined);
    await this.sync().catch((error: unknown) => this.lost(error));
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
    const watcher = this.watcher;
    this.watcher = undefined;
    if (watcher) void withTimeout(watcher.cancel(), 2000, 'cancel the watch').catch(() => undefined);
  }

  /**
   * Joins the fleet: registers this host, reads the whole prefix, converges this host to it, and
   * watches every change after that revision. Bounded: a sync etcd stops answering in the middle
   * of is abandoned, and the next look starts over.
   */
  private sync(): Promise<void> {
    if (this.syncing) return this.syncing;
    const generation = ++this.generation;
    const work = this.syncOnce(generation);
    this.syncing = withTimeout(work, 15_000, 'joining the fleet').finally(() => {
      this.syncing = undefined;
    });
    return this.syncing;
  }

  private async syncOnce(generation: number): Promise<void> {
    const current = (): boolean => generation === this.generation && !this.closed;
    if (!this.lease || this.lease.revoked()) {
      const lease = this.client.lease(HOST_TTL_S);
      lease.on('lost', (error) => {
        if (this.lease === lease) this.lease = undefined;
        if (!this.closed) this.lost(error);
      });
      await lease.grant();
      if (!current()) return;
      this.lease = lease;
      this.reported.clear();
    }
    const mine = (await this.client.get(this.key.host(this.hostId)).exec()).kvs[0];
    if (mine && mine.lease !== (await this.lease.grant())) {
      // What stands under this host's key is overwritten below; it is only looked at to tell a
      // second daemon with this id from a leftover (whatever it holds, even if it is not JSON).
      let other: HostRecord | undefined;
      try {
        other = parseHost(mine.value.toString('utf8'), this.hostId);
      } catch {
        other = undefined;
      }
      if (other !== undefined && other.api !== this.options.config.advertiseUrl) {
        const problem = `another daemon (${other.api}) is registered as host ${this.hostId}: give each host its own CONDUCTOR_HOST_ID`;
        if (!this.problems.includes(problem)) this.problems.push(problem);
        this.options.log.error('another daemon uses this host id', { host: this.hostId, api: other.api });
      }
    }
    const host: HostRecord = { id: this.hostId, api: this.options.config.advertiseUrl, version: this.options.version, startedAt: this.startedAt };
    await this.lease.put(this.key.host(this.hostId)).value(JSON.stringify(host));
    const all = await this.client.getAll().prefix(this.prefix).exec();
    if (!current()) return;
    this.takeAll(all.kvs, all.header.revision);
    this.suspects.clear();
    const watcher = await withTimeout(
      this.client
        .watch()
        .prefix(this.prefix)
        .startRevision(String(BigInt(all.header.revision) + 1n))
        .create(),
      CALL_TIMEOUT_MS,
      'watch the fleet store',
    );
    if (!current()) {
      void withTimeout(watcher.cancel(), 2000, 'cancel the watch').catch(() => undefined);
      return;
    }
    let dropped = false;
    watcher.on('put', (kv) => this.take('put', kv));
    watcher.on('delete', (kv) => this.take('delete', kv));
    // After its events: everything up to this revision has been shown.
    watcher.on('data', (response: { header?: { revision?: string } }) => {
      if (this.watcher === watcher && response.header?.revision) this.saw(response.header.revision);
    });
    // A dropped watch stream is reopened by the client on another member; the events between may
    // not all come back, so the whole prefix is read again once it is.
    watcher.on('disconnected', (error) => {
      dropped = true;
      this.options.log.debug('the watch of the fleet store reconnects', { reason: message(error) });
    });
    watcher.on('connected', () => {
      if (!dropped) return;
      dropped = false;
      void this.reread().catch((error: unknown) => this.options.log.warn('could not read the fleet store again', { reason: message(error) }));
    });
    // A watch etcd cancelled (its start revision compacted, say) is lost: join again at once, with
    // a whole read; only when that fails is the store lost.
    watcher.on('error', (error) => {
      if (this.watcher !== watcher || this.closed) return;
      this.options.log.warn('the watch of the fleet store ended; reading it again', { reason: message(error) });
      void this.resync();
    });
    this.watcher = watcher;
    if (!this.connected) this.options.log.info('joined the fleet', { host: this.hostId, streams: this.desired.size, hosts: this.hosts.size });
    this.connected = true;
    this.since = this.now().toISOString();
    this.lastError = '';
    // Converge every port either side knows of: what the fleet wants, and what this host has.
    const localOnly = this.options.local.list().filter((stream) => !this.desired.has(stream.port)).map((stream) => stream.port);
    if (localOnly.length > 0) this.options.log.warn('removing streams the fleet does not have', { ports: localOnly });
    const ports = new Set([...this.desired.keys(), ...localOnly]);
    await Promise.all([...ports].map((port) => this.converge(port).catch(() => undefined)));
  }

  /** Reads the whole prefix again (after the watch had to reconnect) and converges what changed. */
  private async reread(): Promise<void> {
    const all = await this.client.getAll().prefix(this.prefix).exec();
    const before = new Map([...this.desired].map(([port, desired]) => [port, desired.modRevision]));
    this.takeAll(all.kvs, all.header.revision);
    const changed = new Set<number>();
    for (const [port, revision] of before) if (this.desired.get(port)?.modRevision !== revision) changed.add(port);
    for (const port of this.desired.keys()) if (!before.has(port)) changed.add(port);
    await Promise.all([...changed].map((port) => this.converge(port).catch(() => undefined)));
  }

  /** A whole read of the prefix at `revision`. */
  private takeAll(kvs: IKeyValue[], revision: string): void {
    this.hosts.clear();
    this.applied.clear();
    this.rememberAll(
      kvs.filter((kv) => kv.key.toString('utf8').startsWith(this.key.streams())),
      revision,
    );
    for (const kv of kvs) if (!kv.key.toString('utf8').startsWith(this.key.streams())) this.take('put', kv, false);
  }

  /** One key of the prefix seen (in a read or from the watch, `live`). */
  private take(kind: 'put' | 'delete', kv: IKeyValue, live = true): void {
    const full = kv.key.toString('utf8');
    const key = full.slice(this.prefix.length);
    const parts = key.split('/');
    const [, id = '', last = ''] = parts;
    try {
      if (parts[0] === 'streams') {
        const port = this.portOfStreamKey(full);
        if (port === undefined) return;
        if (live && this.options.deafFile !== undefined && existsSync(this.options.deafFile)) {
          this.options.log.debug('test hook: dropped an event of the watch', { port, kind });
          return;
        }
        if (kind === 'delete') {
          this.forget(port, kv.mod_revision);
          this.invalid.delete(port);
        } else {
          try {
            this.remember(port, parseDesired(kv, port));
            this.invalid.delete(port);
          } catch (error) {
            this.invalid.set(port, kv.mod_revision);
            throw error;
          }
        }
        if (live) void this.converge(port).catch(() => undefined);
      } else if (parts[0] === 'hosts' && parts.length === 2 && HOST_ID.test(id)) {
        if (kind === 'delete') {
          this.hosts.delete(id);
          this.applied.delete(id);
          // This host's own registration gone (its lease ended): register again.
          if (live && id === this.hostId && !this.closed) this.lost(new Error("this host's registration expired"));
        } else this.hosts.set(id, parseHost(kv.value.toString('utf8'), id));
      } else if (parts[0] === 'applied' && parts.length === 3 && HOST_ID.test(id) && /^[0-9]+$/.test(last)) {
        const port = Number(last);
        const reports = this.applied.get(id) ?? new Map<number, AppliedReport>();
        if (kind === 'delete') reports.delete(port);
        else reports.set(port, parseReport(kv.value.toString('utf8')));
        this.applied.set(id, reports);
      }
    } catch (error) {
      this.options.log.warn('skipped a key of the fleet store that is not valid', { key, reason: message(error) });
    }
  }

  // ---- convergence ---------------------------------------------------------------------------

  private isExpired(record: StreamRecord): boolean {
    return record.expiresAt !== undefined && Date.parse(record.expiresAt) <= this.now().getTime();
  }

  /**
   * What a port should run, as the fleet sees it: a pending value counts as the state before it,
   * and an expired stream as none (etcd's lease removes it any moment).
   */
  private effective(port: number): StreamRecord | undefined {
    const desired = this.desired.get(port);
    if (!desired) return undefined;
    const record = desired.pending ? desired.pending.previous : desired.record;
    return record && !this.isExpired(record) ? record : undefined;
  }

  /** What this host should run on a port: its own change in flight, or the fleet's state. */
  private target(port: number): StreamRecord | undefined {
    if (this.inflight.has(port)) return this.inflight.get(port) ?? undefined;
    return this.effective(port);
  }

  /** Brings this host's stream on `port` in line; rejects with the local error. */
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
    const target = this.target(port);
    // parseDesired holds every record to its key's port; a stream is only ever put on its own.
    if (target && target.port !== port) throw new Error(`the fleet's record for port ${port} names port ${target.port}`);
    const revision = this.desired.get(port)?.modRevision ?? '0';
    const local = this.options.local.get(port);
    if (!target) {
      if (local) {
        try {
          await this.options.local.remove(port, options);
        } catch (error) {
          if (!(error instanceof ConductorError && error.code === ErrorCode.NotFound)) {
            this.failures.set(port, `could not remove it: ${message(error)}`);
            this.options.log.warn('could not remove a stream the fleet dropped; trying again', { port, reason: message(error) });
            throw error;
          }
        }
      }
      // What this host really serves: a stream its pipeline still holds is not gone.
      const still = this.options.local.get(port);
      if (still) {
        const reason = `could not remove it: ${still.reason ?? 'this host still has it'}`;
        this.failures.set(port, reason);
        // Tried again with the failures.
        await this.report(port, { state: 'failed', reason, revision });
        return [];
      }
      this.failures.delete(port);
      await this.report(port, undefined);
      return [];
    }
    if (!isPortInRange(port, this.options.portRange)) {
      const reason = `port ${port} is outside this host's PORT_RANGE`;
      this.failures.set(port, reason);
      await this.report(port, { state: 'failed', reason, revision });
      throw new ConductorError(ErrorCode.PortOutOfRange, reason);
    }
    let warnings: string[] = [];
    if (!local || local.state !== 'live' || !sameSpec(local, target)) {
      try {
        warnings = (await this.options.local.put(specOf(target))).warnings;
      } catch (error) {
        this.failures.set(port, message(error));
        await this.report(port, { state: 'failed', reason: message(error), revision });
        throw error;
      }
    }
    // Reported as this host's pipeline holds it now, not as asked.
    const now = this.options.local.get(port);
    if (!now || now.state !== 'live' || !sameSpec(now, target)) {
      const reason = now?.reason ?? (now ? 'this host serves another definition' : 'this host does not serve it');
      this.failures.set(port, reason);
      // Tried again with the failures.
      await this.report(port, { state: 'failed', reason, revision });
      return warnings;
    }
    this.failures.delete(port);
    await this.report(port, { state: 'live', revision });
    return warnings;
  }

  /** Tells the fleet what this host made of a port (nothing when etcd is away: a resync does). */
  private async report(port: number, report: AppliedReport | undefined): Promise<void> {
    // Reports are about the fleet's state, not about this host's own change in flight.
    if (this.inflight.has(port)) return;
    const text = report === undefined ? '' : JSON.stringify(report);
    if (this.reported.get(port) === text || !this.connected || !this.lease) return;
    try {
      if (report === undefined) await this.client.delete().key(this.key.applied(this.hostId, port));
      else await this.lease.put(this.key.applied(this.hostId, port)).value(text);
      this.reported.set(port, text);
      this.unreported.delete(port);
    } catch (error) {
      this.reported.delete(port);
      this.unreported.add(port);
      this.options.log.warn('could not report to the fleet store; trying again', { port, reason: message(error) });
    }
  }

  private retry(): void {
    if (!this.connected) return;
    for (const port of new Set([...this.failures.keys(), ...this.unreported])) {
      if (!this.chains.has(port)) void this.converge(port).catch(() => undefined);
    }
  }

  // ---- writes --------------------------------------------------------------------------------

  private requireConnected(): void {
    if (this.connected) return;
    throw new ConductorError(ErrorCode.StoreUnavailable, `the fleet's store (etcd) is not reachable: ${this.lastError}`, {
      hint: 'this host keeps serving its streams; changes are taken again once etcd answers',
    });
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

  private async etcd<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      // A member that failed just before (as calls do for a moment after etcd comes back) is
      // skipped for a second, and the call never left: while this host is connected, it is
      // tried once more after that second rather than refused.
      if (!this.connected || !(isBrokenCircuitError(error) || /circuit breaker is open/i.test(String((error as Error)?.message)))) throw this.storeError(error);
    }
    await new Promise((resolve) => setTimeout(resolve, HALF_OPEN_MS + 100));
    try {
      return await call();
    } catch (error) {
      throw this.storeError(error);
    }
  }

  /** A lease for a stream that expires (etcd removes the key at its end), or none. */
  private async leaseFor(record: StreamRecord | null): Promise<string> {
    if (!record || record.expiresAt === undefined) return '0';
    const seconds = Math.max(1, Math.ceil((Date.parse(record.expiresAt) - this.now().getTime()) / 1000));
    return this.etcd(() => this.client.lease(seconds, { autoKeepAlive: false }).grant());
  }

  private revoke(lease: string): void {
    if (lease === '0' || lease === '') return;
    void this.client.leaseClient.leaseRevoke({ ID: lease }).catch(() => undefined);
  }

  private putOp(port: number, value: unknown, lease: string) {
    const builder = this.client.put(this.key.stream(port)).value(JSON.stringify(value));
    return lease === '0' ? builder : builder.lease(lease);
  }

  /** Reads a port's key now (not from the watch's copy, which may lag behind). */
  private async read(port: number): Promise<Desired | undefined> {
    const response = await this.etcd(() => this.client.get(this.key.stream(port)).exec());
    const kv = response.kvs[0];
    if (!kv) {
      this.forget(port, response.header.revision);
      return undefined;
    }
    let desired: Desired;
    try {
      desired = parseDesired(kv, port);
    } catch (error) {
      throw new ConductorError(ErrorCode.StoreUnavailable, `the fleet store holds a value for port ${port} that is not valid: ${message(error)}`, {
        hint: 'remove the key (etcdctl del) or replace the stream',
      });
    }
    this.remember(port, desired);
    return desired;
  }

  /** The stream a key stands for now, for a write to compare with: a stale pending or expired one is none. */
  private standing(current: Desired | undefined): StreamRecord | null {
    if (!current) return null;
    if (current.pending) {
      const stale = Date.now() - Date.parse(current.pending.at) > PENDING_STALE_MS || !this.hosts.has(current.by);
      if (!stale && current.by !== this.hostId) return current.pending.previous ?? current.record;
      const previous = current.pending.previous;
      return previous && !this.isExpired(previous) ? previous : null;
    }
    return this.isExpired(current.record) ? null : current.record;
  }

  /**
   * Writes `next` (null: removal) for `port` in the three steps (see the top of the file), given
   * the key as read (`current`). Resolves with the local warnings once the change is live here
   * and committed; rejects with this host's refusal (the fleet unchanged), a conflict, or 503.
   */
  private async change(port: number, current: Desired | undefined, next: StreamRecord | null, options: { killSessions?: boolean } = {}): Promise<string[]> {
    const before = this.standing(current);
    const op = randomUUID();
    const lease = await this.leaseFor(next);
    const pending: Pending = { previous: before, remove: next === null, at: this.now().toISOString() };
    const key = this.key.stream(port);
    const guard = () => (current ? this.client.if(key, 'Mod', '==', current.modRevision) : this.client.if(key, 'Create', '==', 0));
    // Step 1: pending, as long as the key is as read.
    const pendingLease = next === null ? (current?.lease ?? '0') : lease;
    let written: string;
    try {
      const response = await this.etcd(() => guard().then(this.putOp(port, { record: next ?? before ?? current?.record, by: this.hostId, op, pending }, pendingLease)).commit());
      if (!response.succeeded) {
        const found = await this.read(port);
        if (!found || found.op !== op) {
          this.revoke(lease);
          throw new ConductorError(ErrorCode.Conflict, `port ${port} was changed by another host meanwhile`, { hint: 'look at it again (conductor get) and retry' });
        }
        written = found.modRevision; // our own write, retried by the client
      } else written = response.header.revision;
    } catch (error) {
      this.revoke(lease);
      throw error;
    }
    // Step 2: live here (or refused here).
    this.inflight.set(port, next);
    let warnings: string[];
    try {
      warnings = await this.converge(port, options);
    } catch (error) {
      // Step 3, refused: the state before goes back, if nobody changed the key since.
      const restored = await this.settle(port, written, before, before ? (current?.lease ?? '0') : '0', 'restore');
      this.revoke(lease);
      this.inflight.delete(port);
      await this.converge(port).catch(() => undefined);
      // Another client's change came after this one's pending write: nothing of this one is left to take back.
      if (restored === 'failed') {
        throw new ConductorError(ErrorCode.StoreUnavailable, `this host refused the change (${message(error)}), and the fleet store did not take it back`, {
          hint: 'the other hosts keep the state before; look at `conductor get` and retry',
        });
      }
      throw error;
    }
    // Step 3, taken: commit, if nobody changed the key since.
    const committed = await this.settle(port, written, next, lease, 'commit');
    this.inflight.delete(port);
    if (committed !== 'settled') {
      await this.converge(port).catch(() => undefined);
      if (committed === 'failed') {
        throw new ConductorError(ErrorCode.StoreUnavailable, `the fleet store (etcd) did not take the change of port ${port}; this host went back to the state before`, {
          hint: 'look at it again (conductor get) and retry',
        });
      }
      throw new ConductorError(ErrorCode.Conflict, `port ${port} was changed by another host while this one applied it`, {
        hint: 'look at it again (conductor get) and retry',
      });
    }
    if (current && current.lease !== lease && current.lease !== pendingLease) this.revoke(current.lease);
    if (next === null && current) this.revoke(current.lease);
    await this.converge(port).catch(() => undefined);
    return warnings;
  }

  /**
   * Replaces this host's pending write (mod revision `written`) with `record` (null: no key), if
   * the key is still that write. Answers whether it did, or another client's change had replaced
   * that write already, or etcd did not answer.
   */
  private async settle(port: number, written: string, record: StreamRecord | null, lease: string, what: string): Promise<'settled' | 'superseded' | 'failed'> {
    const key = this.key.stream(port);
    const op = randomUUID();
    for (let attempt = 0; attempt < 3; attempt += 1) {
      try {
        const step = record === null ? this.client.delete().key(key) : this.putOp(port, { record, by: this.hostId, op }, lease);
        const response = await this.client.if(key, 'Mod', '==', written).then(step).commit();
        if (response.succeeded) {
          if (record === null) this.forget(port, response.header.revision);
          else this.remember(port, { record, modRevision: response.header.revision, lease, by: this.hostId, op });
          return 'settled';
        }
        // Not ours any more, or ours already settled by a retried call.
        const found = await this.read(port);
        if (record === null ? found === undefined : found?.op === op) return 'settled';
        return 'superseded';
      } catch (error) {
        this.options.log.warn(`could not ${what} a change in the fleet store`, { port, attempt, reason: message(error) });
        // A lease that ended meanwhile: the state goes back without it (it has expired anyway).
        if (/lease not found/i.test(message(error))) lease = '0';
      }
    }
    return 'failed';
  }

  /**
   * The answer to a change that was applied and stored as `applied`. When another client's change
   * to the port came right after it (a remove or replace that won next), the answer still says
   * what this change did, and warns that it is no longer what the port holds.
   */
  private answer(port: number, warnings: string[], change: CreateResult['change'], applied: StreamRecord): CreateResult {
    const stream = this.get(port);
    if (stream && sameSpec(stream, applied)) return { stream, warnings, change };
    const now = this.effective(port);
    const after = now ? `replaced it (to ${describeBackends(now.backends)})` : 'removed it';
    return {
      stream: { ...applied, state: 'live', hosts: [] },
      warnings: [...warnings, `this change was applied, then another client's change to port ${port} ${after}`],
      change,
    };
  }

  async create(spec: StreamSpec): Promise<CreateResult> {
    if (spec.port === 0) return this.createOnFreePort(spec);
    assertPortInRange(spec.port, this.options.portRange);
    this.requireConnected();
    const current = await this.read(spec.port);
    const standing = this.standing(current);
    if (standing) {
      throw new ConductorError(ErrorCode.StreamExists, `port ${spec.port} already has a stream (to ${describeBackends(standing.backends)})`, {
        hint: 'remove it first, pick another port, or replace it (PUT /v1/streams/{port})',
      });
    }
    const record: StreamRecord = { ...spec, createdAt: this.now().toISOString() };
    const warnings = await this.change(spec.port, current, record);
    return this.answer(spec.port, warnings, 'created', record);
  }

  async put(spec: StreamSpec): Promise<CreateResult> {
    assertPortInRange(spec.port, this.options.portRange);
    this.requireConnected();
    const current = await this.read(spec.port);
    const standing = this.standing(current);
    if (standing && !current?.pending && sameSpec(standing, spec)) {
      const warnings = await this.converge(spec.port);
      return this.answer(spec.port, warnings, 'unchanged', standing);
    }
    const now = this.now().toISOString();
    const record: StreamRecord = standing ? { ...spec, createdAt: standing.createdAt, updatedAt: now } : { ...spec, createdAt: now };
    const warnings = await this.change(spec.port, current, record);
    return this.answer(spec.port, warnings, standing ? 'replaced' : 'created', record);
  }

  async renew(port: number, expiresAt: string | undefined): Promise<CreateResult> {
    this.requireConnected();
    const standing = this.standing(await this.read(port));
    if (!standing) throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
    const spec = specOf(standing);
    if (expiresAt === undefined) delete spec.expiresAt;
    else spec.expiresAt = expiresAt;
    return this.put(spec);
  }

  async remove(portText: string | number, options: { killSessions?: boolean } = {}): Promise<{ warnings: string[] }> {
    const port = parsePort(portText);
    this.requireConnected();
    const current = await this.read(port);
    if (!this.standing(current)) {
      if (this.options.local.get(port)) return { warnings: await this.converge(port, options) };
      throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
    }
    return { warnings: await this.change(port, current, null, options) };
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
        const current = await this.read(port);
        if (current) continue; // another host has it, or is taking it
        const record: StreamRecord = { ...spec, port, createdAt: this.now().toISOString() };
        const warnings = await this.change(port, undefined, record);
        return this.answer(port, warnings, 'created', record);
      } catch (error) {
        // Another host took it first (conflict), or this host cannot bind it after all.
        if (error instanceof ConductorError && (error.code === ErrorCode.Conflict || error.code === ErrorCode.StreamExists || error.code === ErrorCode.PortInUse)) continue;
        throw error;
      } finally {
        this.reserved.delete(port);
      }
    }
    throw new ConductorError(ErrorCode.NoFreePort, 'no free port left in the port range', { hint: 'remove streams, or widen PORT_RANGE' });
  }

  plan(specs: StreamSpec[], prune: boolean): ApplyPlan {
    return planApply(
      specs,
      prune,
      (port) => {
        const record = this.effective(port);
        if (!record) return undefined;
        const local = this.options.local.get(port);
        return { record, live: local?.state === 'live' && sameSpec(local, record) };
      },
      [...this.desired.keys()].filter((port) => this.effective(port) !== undefined),
      this.options.defaultListenAddress,
    );
  }

  /**
   * A declarative apply across the fleet, in the same three steps as one change: one transaction
   * writes the whole plan as pending (it holds only if no port of it changed since the read), one
   * all-or-nothing apply on this host, one transaction commits it all (or puts it all back).
   */
  async apply(specs: StreamSpec[], options: { prune: boolean; dryRun: boolean }): Promise<ApplyResult> {
    checkStreamSet(specs, (port) => assertPortInRange(port, this.options.portRange));
    this.requireConnected();
    // Plan against the store as it is now, not the watch's copy.
    const all = await this.etcd(() => this.client.getAll().prefix(this.key.streams()).exec());
    this.rememberAll(all.kvs, all.header.revision);
    const plan = this.plan(specs, options.prune);
    if (options.dryRun) return { dryRun: true, applied: false, plan, warnings: [] };
    const ports = [...plan.create, ...plan.update, ...plan.delete];
    if (ports.length === 0) return { dryRun: false, applied: true, plan, warnings: [] };

    const bySpec = new Map(specs.map((spec) => [spec.port, spec]));
    const now = this.now().toISOString();
    const op = randomUUID();
    const read = new Map(ports.map((port) => [port, this.desired.get(port)]));
    const next = new Map<number, StreamRecord | null>();
    for (const port of ports) {
      const spec = bySpec.get(port);
      const before = this.standing(read.get(port));
      next.set(port, spec ? (before ? { ...spec, createdAt: before.createdAt, updatedAt: now } : { ...spec, createdAt: now }) : null);
    }
    const leases = new Map<number, string>();
    try {
      for (const port of ports) leases.set(port, await this.leaseFor(next.get(port) ?? null));
    } catch (error) {
      for (const lease of leases.values()) this.revoke(lease);
      throw error;
    }
    const compare = (builder: ReturnType<Etcd3['if']> | undefined, port: number, current: Desired | undefined) => {
      const key = this.key.stream(port);
      const column = current ? ('Mod' as const) : ('Create' as const);
      const value = current ? current.modRevision : 0;
      return builder ? builder.and(key, column, '==', value) : this.client.if(key, column, '==', value);
    };
    // Step 1: the whole plan pending.
    let guard: ReturnType<Etcd3['if']> | undefined;
    for (const port of ports) guard = compare(guard, port, read.get(port));
    const pendingPuts = ports.map((port) => {
      const before = this.standing(read.get(port));
      const record = next.get(port) ?? before ?? read.get(port)?.record;
      const lease = next.get(port) === null ? (read.get(port)?.lease ?? '0') : (leases.get(port) ?? '0');
      return this.putOp(port, { record, by: this.hostId, op, pending: { previous: before, remove: next.get(port) === null, at: now } }, lease);
    });
    const response = await this.etcd(() => (guard as ReturnType<Etcd3['if']>).then(...pendingPuts).commit());
    const written = new Map<number, string>();
    if (response.succeeded) for (const port of ports) written.set(port, response.header.revision);
    else {
      for (const port of ports) {
        const found = await this.read(port);
        if (!found || found.op !== op) {
          for (const lease of leases.values()) this.revoke(lease);
          throw new ConductorError(ErrorCode.Conflict, 'streams of the set were changed by another host meanwhile; nothing was applied', {
            hint: 'run the apply again: it plans against the current state',
          });
        }
        written.set(port, found.modRevision);
      }
    }
    // Step 2: all or nothing here.
    for (const port of ports) this.inflight.set(port, next.get(port) ?? null);
    const settleAll = async (records: Map<number, StreamRecord | null>, leaseOf: (port: number) => string): Promise<boolean> => {
      let builder: ReturnType<Etcd3['if']> | undefined;
      for (const port of ports) {
        const key = this.key.stream(port);
        builder = builder ? builder.and(key, 'Mod', '==', written.get(port) ?? '0') : this.client.if(key, 'Mod', '==', written.get(port) ?? '0');
      }
      const settleOp = randomUUID();
      const steps = ports.map((port) => {
        const record = records.get(port) ?? null;
        return record === null ? this.client.delete().key(this.key.stream(port)) : this.putOp(port, { record, by: this.hostId, op: settleOp }, leaseOf(port));
      });
      try {
        const settled = await (builder as ReturnType<Etcd3['if']>).then(...steps).commit();
        return settled.succeeded;
      } catch (error) {
        this.options.log.warn('could not settle a fleet apply', { reason: message(error) });
        return false;
      }
    };
    let warnings: string[];
    try {
      warnings = await this.options.local.applyChanges(
        ports.flatMap((port) => {
          const record = next.get(port);
          return record ? [specOf(record)] : [];
        }),
        ports.filter((port) => next.get(port) === null),
      );
    } catch (error) {
      const before = new Map(ports.map((port) => [port, this.standing(read.get(port))]));
      const restored = await settleAll(before, (port) => read.get(port)?.lease ?? '0');
      for (const lease of leases.values()) this.revoke(lease);
      for (const port of ports) this.inflight.delete(port);
      await this.reread().catch(() => undefined);
      await Promise.all(ports.map((port) => this.converge(port).catch(() => undefined)));
      if (!restored) {
        throw new ConductorError(ErrorCode.StoreUnavailable, `this host refused the apply (${message(error)}), and the fleet store did not take it back`, {
          hint: 'look at `conductor ls` and apply again',
        });
      }
      throw error;
    }
    // Step 3: commit it all.
    const committed = await settleAll(next, (port) => leases.get(port) ?? '0');
    for (const port of ports) this.inflight.delete(port);
    await this.reread().catch(() => undefined);
    await Promise.all(ports.map((port) => this.converge(port).catch(() => undefined)));
    if (!committed) {
      throw new ConductorError(ErrorCode.Conflict, 'streams of the set were changed by another host while this one applied them', {
        hint: 'look at `conductor ls` and apply again',
      });
    }
    for (const port of ports) {
      const old = read.get(port)?.lease ?? '0';
      if (old !== (leases.get(port) ?? '0')) this.revoke(old);
    }
    return { dryRun: false, applied: true, plan, warnings };
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

  /** How each running host reports a port's stream as of the key's revision. */
  private hostStates(port: number, target: StreamRecord, revision: string): HostStreamState[] {
    const states: HostStreamState[] = [];
    for (const id of [...this.hosts.keys()].sort()) {
      if (id === this.hostId) {
        const local = this.options.local.get(port);
        const failure = this.failures.get(port);
        if (local?.state === 'live' && sameSpec(local, target)) states.push({ host: id, state: 'live' });
        else if (failure !== undefined) states.push({ host: id, state: 'failed', reason: failure });
        else states.push({ host: id, state: 'pending' });
        continue;
      }
      const report = this.applied.get(id)?.get(port);
      if (!report || newer(revision, report.revision)) states.push({ host: id, state: 'pending' });
      else states.push({ host: id, state: report.state, ...(report.reason !== undefined ? { reason: report.reason } : {}) });
    }
    return states;
  }

  private viewOf(port: number): StreamView | undefined {
    const target = this.effective(port);
    const local = this.options.local.get(port);
    if (!target) {
      if (!local) return undefined;
      return { ...local, reason: local.reason ?? "not in the fleet's set: being removed", hosts: [] };
    }
    let view: StreamView;
    if (local && sameSpec(local, target)) {
      view = { ...local, createdAt: target.createdAt };
      if (target.updatedAt !== undefined) view.updatedAt = target.updatedAt;
      else delete view.updatedAt;
    } else {
      view = { ...target, state: 'failed', reason: this.failures.get(port) ?? 'not applied on this host yet' };
    }
    view.hosts = this.hostStates(port, target, this.desired.get(port)?.modRevision ?? '0');
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
    if (this.options.local.get(port)) await this.options.local.checkHealth(port);
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
      problems: [...local.problems, ...this.problems],
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
    const watcher = this.watcher;
    this.watcher = undefined;
    // Bounded: a store that stopped answering does not hold up the daemon's exit.
    if (watcher) await withTimeout(watcher.cancel(), 2000, 'cancel the watch').catch(() => undefined);
    // Leaving the fleet: this host and its reports disappear at once rather than at the lease's end.
    if (this.connected && this.lease) await withTimeout(this.lease.revoke(), 2000, 'leave the fleet').catch(() => undefined);
    this.client.close();
    await this.options.local.close();
  }
}
