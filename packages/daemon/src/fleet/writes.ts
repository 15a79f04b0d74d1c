/**
 * The fleet's write protocol. A change through any host's API goes in three steps, so that a
 * change the host refuses is never seen by the others and a change it acknowledges is in etcd:
 *   1. a transaction writes it as pending, guarded by each port's key as the host last read it
 *      (one stream per port across the fleet; allocation atomic across hosts). A pending value
 *      carries the state before it: the other hosts keep serving that state meanwhile;
 *   2. the host applies it to its own nginx through the verified pipeline (the local service,
 *      whose own file keeps what this host applied, to serve from without etcd);
 *   3. a second transaction commits it (or, when the host refused it, puts the state before back)
 *      if nobody changed the keys since; then the others converge to it. A key another client
 *      changed meanwhile stops the commit (all or nothing), and the state before goes back on
 *      the other keys.
 * A writer that dies between 1 and 3 leaves a pending value that means the state before it.
 *
 * One protocol for both kinds of write: a single change is a set of one, applied here through
 * convergence (`one`); a declarative apply is a set applied here all or nothing (`set`). The two
 * differ only in how step 2 runs and in how their refusals are worded.
 */
import { randomUUID } from 'node:crypto';
import { ConductorError, ErrorCode, type StreamRecord } from '@stream-conductor/shared';
import { bestEffort, type Logger } from '../log.js';
import { specOf } from '../service/records.js';
import type { Convergence } from './converge.js';
import type { DesiredCache } from './desired.js';
import { type Compare, type FleetStore, message, type Step, storeCall } from './etcd.js';
import { type Desired, type FleetKeys, isOver, keyEnd, parseDesired, pendingValue, settledValue } from './keys.js';
import type { LocalService } from './local.js';

/** A pending value older than this, or whose writer is gone, may be written over by a create. */
const PENDING_STALE_MS = 30_000;
/** How often a settling transaction that etcd did not answer is tried. */
const SETTLE_ATTEMPTS = 3;

/** One port of a write: its key as read (`current`) and the stream it makes (null: removed). */
export interface PortWrite {
  port: number;
  current: Desired | undefined;
  next: StreamRecord | null;
}

/** A port of a write being written: with the state before it and the lease of `next` ('0': none). */
interface Writing extends PortWrite {
  before: StreamRecord | null;
  lease: string;
}

/**
 * The lease of the state before a port's write ('0': none): its key's, as read, when the key held
 * it settled. A pending value left by another write sits on that write's lease, which its writer
 * may still revoke when its own commit fails: the state before is not put on it (it goes without
 * a lease then, and stands for nothing once it expires; see isOver).
 */
function leaseBefore({ before, current }: Writing): string {
  if (before === null || keyEnd(before) === undefined || current?.pending) return '0';
  return current?.lease ?? '0';
}

/**
 * The lease a pending value is written on. Until step 3 it stands for the state before, and it
 * may become `next`: it goes on the lease of whichever of the two ends later (none when either
 * does not expire), so that etcd does not remove the key while either may still stand. (On
 * `next`'s lease alone, a change left pending would take a stream that does not expire with it
 * when that lease ends; on the old one alone, a renewal would lose its key if the stream expired
 * while the host applied it.)
 */
function pendingLease(port: Writing): string {
  const { before, next } = port;
  if (next === null) return leaseBefore(port);
  const nextEnd = keyEnd(next);
  const beforeEnd = before === null ? undefined : keyEnd(before);
  if (before === null || nextEnd === undefined) return port.lease;
  if (beforeEnd === undefined) return '0';
  return nextEnd >= beforeEnd ? port.lease : leaseBefore(port);
}

/** How a write is applied on this host (step 2). */
export type WriteKind = { kind: 'one'; killSessions?: boolean } | { kind: 'set' };

/**
 * How step 3 went: done; stopped by another client's change to one of its keys meanwhile; or etcd
 * did not answer. Each is answered differently: 409, 503. `left`: the ports whose key may still
 * hold this write's pending value.
 */
interface Settled {
  outcome: 'settled' | 'superseded' | 'unanswered';
  left: Writing[];
}

/** The refusals of a write, as its kind words them. */
interface Wording {
  changedMeanwhile(): ConductorError;
  underWay(port: number, host: string): ConductorError;
  changedWhileApplying(): ConductorError;
  notCommitted(): ConductorError;
  notTakenBack(refusal: unknown): ConductorError;
}

function wordingOf(kind: WriteKind['kind'], port: number): Wording {
  if (kind === 'set') {
    const changedWhileApplying = () =>
      new ConductorError(
        ErrorCode.Conflict,
        'streams of the set were changed by another host while this one applied them',
        { hint: 'look at `conductor ls` and apply again' },
      );
    return {
      underWay: (port, host) =>
        new ConductorError(
          ErrorCode.Conflict,
          `port ${port} of the set is being changed through host ${host} right now; nothing was applied`,
          { hint: 'run the apply again in a moment: it plans against the state then' },
        ),
      changedMeanwhile: () =>
        new ConductorError(
          ErrorCode.Conflict,
          'streams of the set were changed by another host meanwhile; nothing was applied',
          {
            hint: 'run the apply again: it plans against the current state',
          },
        ),
      changedWhileApplying,
      notCommitted: () =>
        new ConductorError(
          ErrorCode.StoreUnavailable,
          'the fleet store (etcd) did not take the apply; this host went back to the state before',
          { hint: 'look at `conductor ls` and apply again' },
        ),
      notTakenBack: (refusal) =>
        new ConductorError(
          ErrorCode.StoreUnavailable,
          `this host refused the apply (${message(refusal)}), and the fleet store did not take it back`,
          {
            hint: 'look at `conductor ls` and apply again',
          },
        ),
    };
  }
  const retry = { hint: 'look at it again (conductor get) and retry' };
  return {
    underWay: (_port, host) =>
      new ConductorError(ErrorCode.Conflict, `port ${port} is being changed through host ${host} right now`, {
        hint: 'try again in a moment (conductor get shows the change once it is done)',
      }),
    changedMeanwhile: () =>
      new ConductorError(ErrorCode.Conflict, `port ${port} was changed by another host meanwhile`, retry),
    changedWhileApplying: () =>
      new ConductorError(
        ErrorCode.Conflict,
        `port ${port} was changed by another host while this one applied it`,
        retry,
      ),
    notCommitted: () =>
      new ConductorError(
        ErrorCode.StoreUnavailable,
        `the fleet store (etcd) did not take the change of port ${port}; this host went back to the state before`,
        retry,
      ),
    notTakenBack: (refusal) =>
      new ConductorError(
        ErrorCode.StoreUnavailable,
        `this host refused the change (${message(refusal)}), and the fleet store did not take it back`,
        {
          hint: 'the other hosts keep the state before; look at `conductor get` and retry',
        },
      ),
  };
}

export interface WritesOptions {
  store: FleetStore;
  keys: FleetKeys;
  cache: DesiredCache;
  convergence: Pick<Convergence, 'converge' | 'nudge' | 'hold' | 'release'>;
  local: Pick<LocalService, 'applyChanges'>;
  hostId: string;
  now: () => Date;
  log: Logger;
  /** Whether this host's session with etcd stands (a call refused by the circuit breaker is then tried again). */
  connected(): boolean;
  /** Reads the whole prefix again and converges what changed (after a set). */
  reread(): Promise<void>;
}

export class FleetWrites {
  /** The operations of this host's writes under way: its own pending values that are live. */
  private readonly inFlight = new Set<string>();

  constructor(private readonly options: WritesOptions) {}

  private call<T>(call: () => Promise<T>): Promise<T> {
    return storeCall(this.options.connected, call);
  }

  /** Reads a port's key now (not from the watch's copy, which may lag behind). */
  async read(port: number): Promise<Desired | undefined> {
    const { cache } = this.options;
    const { kv, revision } = await this.call(() => this.options.store.get(this.options.keys.stream(port)));
    if (!kv) {
      cache.forget(port, revision);
      return undefined;
    }
    let desired: Desired;
    try {
      desired = parseDesired(kv, port);
    } catch (error) {
      throw new ConductorError(
        ErrorCode.StoreUnavailable,
        `the fleet store holds a value for port ${port} that is not valid: ${message(error)}`,
        {
          hint: 'remove the key (etcdctl del) or replace the stream',
        },
      );
    }
    cache.remember(port, desired);
    return desired;
  }

  /** Reads every stream's key now, into the cache (a declarative apply plans against the store as it is). */
  async readStreams(): Promise<void> {
    const all = await this.call(() => this.options.store.getPrefix(this.options.keys.streams()));
    this.options.cache.rememberAll(all.kvs, all.revision);
  }

  /**
   * Whether a change of the key is under way: this host's own write still running, or another
   * host's pending value, that host registered and the value not older (or newer, by its clock)
   * than PENDING_STALE_MS.
   */
  changing(current: Desired | undefined): boolean {
    if (!current?.pending) return false;
    if (current.by === this.options.hostId) return this.inFlight.has(current.op);
    const age = Math.abs(this.options.now().getTime() - Date.parse(current.pending.at));
    return age <= PENDING_STALE_MS && this.options.cache.hosts.has(current.by);
  }

  /**
   * Removes a port's key if it is still at mod revision `revision` (a drained stream: every host
   * reported its sessions ended). Answers whether it did; a key changed meanwhile stays.
   */
  async removeIfUnchanged(port: number, revision: string): Promise<boolean> {
    const key = this.options.keys.stream(port);
    const response = await this.call(() => this.options.store.txn([{ key, modRevision: revision }], [{ delete: key }]));
    if (response.succeeded) this.options.cache.forget(port, response.revision);
    return response.succeeded;
  }

  /** The stream a key stands for now, for a write to compare with: a stale pending or expired one is none. */
  standing(current: Desired | undefined): StreamRecord | null {
    if (!current) return null;
    const now = this.options.now();
    if (current.pending) {
      if (this.changing(current) && current.by !== this.options.hostId)
        return current.pending.previous ?? current.record;
      const previous = current.pending.previous;
      return previous && !isOver(previous, now) ? previous : null;
    }
    return isOver(current.record, now) ? null : current.record;
  }

  /**
   * Writes `writes` in the three steps (see the top of the file); `admit`, after step 1, may refuse
   * it as this host's own refusal would. Resolves with the local warnings
   * once the change is live here and committed; rejects with this host's refusal (the fleet
   * unchanged), a conflict, or 503.
   */
  async write(writes: PortWrite[], how: WriteKind, admit?: () => Promise<void>): Promise<string[]> {
    const wording = wordingOf(how.kind, writes[0]?.port ?? 0);
    // Another write's pending value is never written over while its writer lives: that writer
    // would revoke the lease it put there when its commit fails, taking this write's key (and the
    // stream) with it. The later change is refused; the caller asks again once that one settled.
    const busy = writes.find(({ current }) => this.changing(current));
    if (busy?.current) throw wording.underWay(busy.port, busy.current.by);
    const op = randomUUID();
    this.inFlight.add(op);
    try {
      return await this.writeAs(op, writes, how, wording, admit);
    } finally {
      this.inFlight.delete(op);
    }
  }

  private async writeAs(
    op: string,
    writes: PortWrite[],
    how: WriteKind,
    wording: Wording,
    admit: (() => Promise<void>) | undefined,
  ): Promise<string[]> {
    const leases = await this.leasesFor(writes);
    const ports: Writing[] = writes.map((write, i) => ({
      ...write,
      before: this.standing(write.current),
      lease: leases[i] ?? '0',
    }));
    // Step 1: pending, as long as every key is as read.
    const written = await this.markPending(ports, wording, op);
    // Step 2: live here (or refused here).
    for (const port of ports) this.options.convergence.hold(port.port, port.next);
    let warnings: string[];
    try {
      // What only the fleet's state with this write pending can refuse (see FleetConductor.admitSpans).
      await admit?.();
      warnings = await this.applyHere(ports, how);
    } catch (refusal) {
      // Step 3, refused: the state before goes back on every port nobody changed since (a port
      // another client wrote meanwhile keeps that client's change).
      const restored = await this.settle(ports, written, 'restore');
      this.revokeUnused(ports, restored.left);
      await this.release(ports, how);
      if (restored.outcome === 'unanswered') throw wording.notTakenBack(refusal);
      throw refusal;
    }
    // Step 3, taken: commit, if nobody changed the keys since.
    const committed = await this.settle(ports, written, 'commit');
    // Another client wrote a port meanwhile, so none of this write is committed: its pending values
    // go back to the state before on the other ports, rather than standing there (another host
    // takes a fresh pending create for the new stream) until someone writes over them.
    const left =
      committed.outcome === 'superseded'
        ? (await this.settle(committed.left, written, 'restore')).left
        : committed.left;
    await this.release(ports, how);
    if (committed.outcome === 'settled') {
      this.revokeAll(ports.map((port) => port.current?.lease ?? '0').filter((old, i) => old !== ports[i]?.lease));
      return warnings;
    }
    this.revokeUnused(ports, left);
    if (committed.outcome === 'unanswered') throw wording.notCommitted();
    throw wording.changedWhileApplying();
  }

  /** A lease for each stream whose key ends (its expiry or its drain, see keyEnd; etcd removes the key then), or '0'. */
  private async leasesFor(writes: PortWrite[]): Promise<string[]> {
    const leases: string[] = [];
    try {
      for (const { next } of writes) {
        const end = next ? keyEnd(next) : undefined;
        if (end === undefined) {
          leases.push('0');
          continue;
        }
        const seconds = Math.max(1, Math.ceil((end - this.options.now().getTime()) / 1000));
        leases.push(await this.call(() => this.options.store.grantLease(seconds)));
      }
    } catch (error) {
      this.revokeAll(leases);
      throw error;
    }
    return leases;
  }

  /**
   * After a write that was not committed: its new leases hold nothing of it, but where its pending
   * value may still stand (`left`: etcd did not answer). There it stays, standing for the state
   * before (a renewal's is on the new lease), until the lease ends on its own.
   */
  private revokeUnused(ports: Writing[], left: Writing[]): void {
    this.revokeAll(ports.filter((port) => !left.includes(port)).map((port) => port.lease));
  }

  private revokeAll(leases: string[]): void {
    for (const lease of leases) {
      if (lease === '0' || lease === '') continue;
      void bestEffort(this.options.log, `revoke lease ${lease}`, () => this.options.store.revokeLease(lease), 'warn');
    }
  }

  /** Step 1: answers the mod revision of each port's pending value. */
  private async markPending(ports: Writing[], wording: Wording, op: string): Promise<Map<number, string>> {
    const { keys, hostId } = this.options;
    const at = this.options.now().toISOString();
    const compares: Compare[] = ports.map(({ port, current }) =>
      current ? { key: keys.stream(port), modRevision: current.modRevision } : { key: keys.stream(port), absent: true },
    );
    const steps: Step[] = ports.map((port) => ({
      put: keys.stream(port.port),
      value: pendingValue(port.next ?? port.before ?? port.current?.record, hostId, op, {
        previous: port.before,
        remove: port.next === null,
        at,
      }),
      lease: pendingLease(port),
    }));
    try {
      const response = await this.call(() => this.options.store.txn(compares, steps));
      if (response.succeeded) return new Map(ports.map(({ port }) => [port, response.revision]));
      const written = new Map<number, string>();
      for (const { port } of ports) {
        const found = await this.read(port);
        if (!found || found.op !== op) throw wording.changedMeanwhile();
        written.set(port, found.modRevision); // our own write, retried by the client
      }
      return written;
    } catch (error) {
      this.revokeAll(ports.map((port) => port.lease));
      throw error;
    }
  }

  /** Step 2: one change through convergence (it reports as usual), a set all or nothing. */
  private applyHere(ports: Writing[], how: WriteKind): Promise<string[]> {
    const [first] = ports;
    if (how.kind === 'one' && first && ports.length === 1)
      return this.options.convergence.converge(first.port, { killSessions: how.killSessions === true });
    return this.options.local.applyChanges(
      ports.flatMap(({ next }) => (next ? [specOf(next)] : [])),
      ports.filter(({ next }) => next === null).map(({ port }) => port),
    );
  }

  /** After step 3: this host goes back to the fleet's state of the ports. */
  private async release(ports: Writing[], how: WriteKind): Promise<void> {
    for (const { port } of ports) this.options.convergence.release(port);
    if (how.kind === 'set')
      await bestEffort(this.options.log, 'read the fleet store again', () => this.options.reread());
    await Promise.all(ports.map(({ port }) => this.options.convergence.nudge(port)));
  }

  /**
   * Step 3: replaces this host's pending values (mod revisions `written`) with the change
   * (`commit`) or the state before (`restore`), on every port whose key is still that write.
   * A commit is all or nothing: another client's change to any port stops it ('superseded').
   * A restore goes on without such a port: each port's state before stands on its own.
   */
  private async settle(ports: Writing[], written: Map<number, string>, what: 'commit' | 'restore'): Promise<Settled> {
    const { keys, hostId, cache, log } = this.options;
    const op = randomUUID();
    const recordOf = (port: Writing): StreamRecord | null => (what === 'commit' ? port.next : port.before);
    const leaseOf = (port: Writing): string => (what === 'commit' ? port.lease : leaseBefore(port));
    let withoutLeases = false;
    // The ports whose key still holds this write's pending value.
    let left = ports;
    let failures = 0;
    while (left.length > 0) {
      try {
        const compares = left.map(({ port }) => ({ key: keys.stream(port), modRevision: written.get(port) ?? '0' }));
        const steps: Step[] = left.map((port) => {
          const record = recordOf(port);
          const key = keys.stream(port.port);
          return record === null
            ? { delete: key }
            : { put: key, value: settledValue(record, hostId, op), lease: withoutLeases ? '0' : leaseOf(port) };
        });
        const response = await this.options.store.txn(compares, steps);
        if (!response.succeeded) {
          // A key that changed is settled already or another client's: each pass leaves out at least one port.
          const changed = await this.changedSince(left, written, recordOf, op);
          if (changed.superseded && what === 'commit') return { outcome: 'superseded', left: changed.left };
          left = changed.left;
          continue;
        }
        for (const port of left) {
          const record = recordOf(port);
          if (record === null) cache.forget(port.port, response.revision);
          else
            cache.remember(port.port, {
              record,
              modRevision: response.revision,
              lease: withoutLeases ? '0' : leaseOf(port),
              by: hostId,
              op,
            });
        }
        return { outcome: 'settled', left: [] };
      } catch (error) {
        log.warn(`could not ${what} a change in the fleet store`, {
          ...(left.length === 1 ? { port: left[0]?.port } : { ports: left.map(({ port }) => port) }),
          attempt: failures,
          reason: message(error),
        });
        // A lease that ended meanwhile: the state goes back without it (it has expired anyway).
        if (/lease not found/i.test(message(error))) withoutLeases = true;
        failures += 1;
        if (failures === SETTLE_ATTEMPTS) return { outcome: 'unanswered', left };
      }
    }
    return { outcome: 'settled', left };
  }

  /**
   * A settling transaction found keys changed since step 1. A port is settled already when this
   * same settle wrote it (a call the client retried), or when it is to be removed and its key is
   * gone (with its lease, say: the removal is done, as a single removal is). Any other change
   * is another client's. Answers the ports whose key still holds this write's pending value,
   * to settle without the others.
   */
  private async changedSince(
    left: Writing[],
    written: Map<number, string>,
    recordOf: (port: Writing) => StreamRecord | null,
    op: string,
  ): Promise<{ left: Writing[]; superseded: boolean }> {
    const still: Writing[] = [];
    let superseded = false;
    for (const port of left) {
      const found = await this.read(port.port);
      if (recordOf(port) === null ? found === undefined : found?.op === op) continue;
      if (found?.modRevision === written.get(port.port)) still.push(port);
      else superseded = true;
    }
    return { left: still, superseded };
  }
}
