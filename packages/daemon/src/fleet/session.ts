/**
 * This host's session with the fleet's etcd: its registration on a lease kept alive, the watch of
 * the prefix, the whole reads that join (or rejoin) the fleet, and the supervision that checks
 * every second that etcd answers and that the watch missed nothing. Without etcd, the host keeps
 * serving what it has; the session says so and joins again once etcd answers.
 */
import { existsSync } from 'node:fs';
import type { Etcd3, IKeyValue, Lease, Watcher } from 'etcd3';
import { bestEffort, type Logger } from '../log.js';
import type { Convergence, Reporter } from './converge.js';
import type { DesiredCache } from './desired.js';
import { CALL_TIMEOUT_MS, message, storedKey, withTimeout } from './etcd.js';
import { type FleetKeys, type HostRecord, newer, parseHost, prefixEnd } from './keys.js';
import type { LocalService } from './local.js';

const HOST_TTL_S = 10;
/**
 * How often a connected host checks itself against etcd: one read of the streams' keys and mod
 * revisions (no values) with its own registration, compared with what the watch has shown; and
 * every port's local state compared with what it should run.
 */
const SUPERVISE_MS = 1000;

export interface SessionOptions {
  client: Etcd3;
  keys: FleetKeys;
  cache: DesiredCache;
  convergence: Convergence;
  local: LocalService;
  host: HostRecord;
  log: Logger;
  now: () => Date;
  /** How often streams this host could not apply (or report) are tried again. */
  retryIntervalMs: number;
  /** Test hook: while this file exists, stream events of the watch are dropped (see FleetOptions). */
  deafFile?: string | undefined;
}

export class Session implements Reporter {
  connected = false;
  since: string;
  lastError = 'not connected yet';
  readonly problems: string[] = [];

  private watcher: Watcher | undefined;
  private lease: Lease | undefined;
  private syncing: Promise<void> | undefined;
  /** Bumped by every sync: the results of an abandoned one are dropped. */
  private generation = 0;
  /** Ports on which the last self-check found etcd and this host's copy apart (etcd's mod revision, or 'none'). */
  private suspects = new Map<number, string>();
  private timer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly options: SessionOptions) {
    this.since = options.host.startedAt;
  }

  /** Joins the fleet (now, or as soon as etcd answers) and supervises the session from then on. */
  async start(): Promise<void> {
    await this.sync().catch((error: unknown) => this.lost(error));
    this.timer = setInterval(() => void this.supervise(), SUPERVISE_MS);
    this.timer.unref();
    this.retryTimer = setInterval(() => {
      if (this.connected) this.options.convergence.retry();
    }, this.options.retryIntervalMs);
    this.retryTimer.unref();
  }

  ready(): boolean {
    return this.connected && this.lease !== undefined;
  }

  async write(port: number, text: string | undefined): Promise<void> {
    const key = this.options.keys.applied(this.options.host.id, port);
    if (text === undefined) await this.options.client.delete().key(key);
    else if (this.lease) await this.lease.put(key).value(text);
    else throw new Error('this host has no lease in the fleet store');
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
      this.options.log.warn('the watch of the fleet store missed changes; reading it again', {
        ports: missed.slice(0, 20),
        seenRevision: this.options.cache.seenRevision,
      });
      await this.resync();
      return;
    }
    this.options.convergence.checkLocal();
  }

  /**
   * Compares this host's copy of the desired set with etcd's: one read of the streams' keys and
   * mod revisions (no values), in the same transaction as this host's registration (which also
   * tells that etcd answers). A port whose key differs, while the watch has shown everything up to
   * the read's revision or the same difference was there one check before, was missed. Answers
   * those ports.
   */
  private async selfCheck(): Promise<number[]> {
    const { keys, cache } = this.options;
    const streams = keys.streams();
    const response = await withTimeout(
      this.options.client.kv.txn({
        success: [
          { request_range: { key: Buffer.from(streams), range_end: prefixEnd(streams), keys_only: true } },
          { request_range: { key: Buffer.from(keys.host(this.options.host.id)), keys_only: true } },
        ],
      }),
      CALL_TIMEOUT_MS,
      'check the fleet store',
    );
    const revision = response.header?.revision ?? '0';
    const kvs = response.responses?.[0]?.response_range?.kvs ?? [];
    const stored = new Map<number, string>();
    for (const kv of kvs) {
      const port = keys.portOfStreamKey(Buffer.from(kv.key).toString('utf8'));
      if (port !== undefined) stored.set(port, kv.mod_revision);
    }
    const apart = new Map<number, string>();
    for (const [port, modRevision] of stored) {
      if (cache.invalid.get(port) === modRevision) continue;
      const known = cache.desired.get(port);
      if (known?.modRevision === modRevision) continue;
      // This host knows of something newer than the read (its own write, or the watch was quicker).
      if ((known && newer(known.modRevision, revision)) || newer(cache.deletedAt.get(port) ?? '0', revision)) continue;
      apart.set(port, modRevision);
    }
    for (const [port, known] of cache.desired) {
      if (stored.has(port) || newer(known.modRevision, revision)) continue;
      apart.set(port, 'none');
    }
    const caughtUp = !newer(revision, cache.seenRevision);
    const missed = [...apart]
      .filter(([port, what]) => caughtUp || this.suspects.get(port) === what)
      .map(([port]) => port);
    this.suspects = apart;
    return missed;
  }

  /** Cancels the watch, if any (bounded: a store that stopped answering holds nothing up). */
  private dropWatch(): Promise<unknown> {
    const watcher = this.watcher;
    this.watcher = undefined;
    if (!watcher) return Promise.resolve();
    return bestEffort(this.options.log, 'cancel the watch', withTimeout(watcher.cancel(), 2000, 'cancel the watch'));
  }

  /** Drops the watch and joins the fleet again: a whole read, a new watch, every port converged. */
  private async resync(): Promise<void> {
    void this.dropWatch();
    await this.sync().catch((error: unknown) => this.lost(error));
  }

  /** etcd stopped answering: keep serving, refuse changes, resync when it is back. */
  private lost(error: unknown): void {
    const reason = message(error);
    if (this.connected) {
      this.options.log.warn('lost the fleet store; serving what this host has until it answers again', { reason });
      this.since = this.options.now().toISOString();
    }
    this.connected = false;
    this.lastError = reason;
    void this.dropWatch();
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
    const lease = await this.register(current);
    if (!lease) return;
    const { client, keys, cache, log } = this.options;
    const all = await client.getAll().prefix(keys.prefix).exec();
    if (!current()) return;
    cache.takeAll(all.kvs.map(storedKey), all.header.revision);
    this.suspects.clear();
    const watcher = await withTimeout(
      client
        .watch()
        .prefix(keys.prefix)
        .startRevision(String(BigInt(all.header.revision) + 1n))
        .create(),
      CALL_TIMEOUT_MS,
      'watch the fleet store',
    );
    if (!current()) {
      void bestEffort(log, 'cancel the watch', withTimeout(watcher.cancel(), 2000, 'cancel the watch'));
      return;
    }
    this.listen(watcher);
    this.watcher = watcher;
    if (!this.connected)
      log.info('joined the fleet', {
        host: this.options.host.id,
        streams: cache.desired.size,
        hosts: cache.hosts.size,
      });
    this.connected = true;
    this.since = this.options.now().toISOString();
    this.lastError = '';
    // Converge every port either side knows of: what the fleet wants, and what this host has.
    const localOnly = this.options.local
      .list()
      .filter((stream) => !cache.desired.has(stream.port))
      .map((stream) => stream.port);
    if (localOnly.length > 0) log.warn('removing streams the fleet does not have', { ports: localOnly });
    const ports = new Set([...cache.desired.keys(), ...localOnly]);
    await Promise.all([...ports].map((port) => this.options.convergence.nudge(port)));
  }

  /** This host's lease (a new one if it has none) and its registration on it; undefined if abandoned. */
  private async register(current: () => boolean): Promise<Lease | undefined> {
    const { client, keys, host, log } = this.options;
    if (!this.lease || this.lease.revoked()) {
      const lease = client.lease(HOST_TTL_S);
      lease.on('lost', (error) => {
        if (this.lease === lease) this.lease = undefined;
        if (!this.closed) this.lost(error);
      });
      await lease.grant();
      if (!current()) return undefined;
      this.lease = lease;
      this.options.convergence.forgetReports();
    }
    const lease = this.lease;
    const mine = (await client.get(keys.host(host.id)).exec()).kvs[0];
    if (mine && mine.lease !== (await lease.grant())) {
      // What stands under this host's key is overwritten below; it is only looked at to tell a
      // second daemon with this id from a leftover (whatever it holds, even if it is not JSON).
      let other: HostRecord | undefined;
      try {
        other = parseHost(mine.value.toString('utf8'), host.id);
      } catch {
        other = undefined;
      }
      if (other !== undefined && other.api !== host.api) {
        const problem = `another daemon (${other.api}) is registered as host ${host.id}: give each host its own CONDUCTOR_HOST_ID`;
        if (!this.problems.includes(problem)) this.problems.push(problem);
        log.error('another daemon uses this host id', { host: host.id, api: other.api });
      }
    }
    await lease.put(keys.host(host.id)).value(JSON.stringify(host));
    return lease;
  }

  private listen(watcher: Watcher): void {
    const { log, cache } = this.options;
    let dropped = false;
    watcher.on('put', (kv) => this.take('put', kv));
    watcher.on('delete', (kv) => this.take('delete', kv));
    // After its events: everything up to this revision has been shown.
    watcher.on('data', (response: { header?: { revision?: string } }) => {
      if (this.watcher === watcher && response.header?.revision) cache.saw(response.header.revision);
    });
    // A dropped watch stream is reopened by the client on another member; the events between may
    // not all come back, so the whole prefix is read again once it is.
    watcher.on('disconnected', (error) => {
      dropped = true;
      log.debug('the watch of the fleet store reconnects', { reason: message(error) });
    });
    watcher.on('connected', () => {
      if (!dropped) return;
      dropped = false;
      void this.reread().catch((error: unknown) =>
        log.warn('could not read the fleet store again', { reason: message(error) }),
      );
    });
    // A watch etcd cancelled (its start revision compacted, say) is lost: join again at once, with
    // a whole read; only when that fails is the store lost.
    watcher.on('error', (error) => {
      if (this.watcher !== watcher || this.closed) return;
      log.warn('the watch of the fleet store ended; reading it again', { reason: message(error) });
      void this.resync();
    });
  }

  /** One key of the prefix from the watch. */
  private take(kind: 'put' | 'delete', raw: IKeyValue): void {
    const kv = storedKey(raw);
    const { keys, deafFile, log } = this.options;
    const port = keys.portOfStreamKey(kv.key);
    if (port !== undefined && deafFile !== undefined && existsSync(deafFile)) {
      log.debug('test hook: dropped an event of the watch', { port, kind });
      return;
    }
    const taken = this.options.cache.take(kind, kv);
    if (taken?.kind === 'stream') void this.options.convergence.nudge(taken.port);
    // This host's own registration gone (its lease ended): register again.
    else if (taken?.kind === 'host-gone' && taken.id === this.options.host.id && !this.closed)
      this.lost(new Error("this host's registration expired"));
  }

  /** Reads the whole prefix again (after the watch had to reconnect) and converges what changed. */
  async reread(): Promise<void> {
    const { client, keys, cache, convergence } = this.options;
    const all = await client.getAll().prefix(keys.prefix).exec();
    const before = new Map([...cache.desired].map(([port, desired]) => [port, desired.modRevision]));
    cache.takeAll(all.kvs.map(storedKey), all.header.revision);
    const changed = new Set<number>();
    for (const [port, revision] of before) if (cache.desired.get(port)?.modRevision !== revision) changed.add(port);
    for (const port of cache.desired.keys()) if (!before.has(port)) changed.add(port);
    await Promise.all([...changed].map((port) => convergence.nudge(port)));
  }

  /** Leaves the fleet: this host and its reports disappear at once rather than at the lease's end. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    if (this.retryTimer) clearInterval(this.retryTimer);
    // Bounded: a store that stopped answering does not hold up the daemon's exit.
    await this.dropWatch();
    const lease = this.lease;
    if (this.connected && lease)
      await bestEffort(
        this.options.log,
        'leave the fleet',
        withTimeout(lease.revoke(), 2000, 'leave the fleet'),
        'warn',
      );
    this.options.client.close();
  }
}
