/**
 * This host's copy of the fleet's keys, by revision: the desired set (a value or a deletion per
 * port, never going back to an older one), the hosts that are up and what each reported, and how
 * far the watch (or a whole read) has shown the store.
 */
import type { StreamRecord } from '@stream-conductor/shared';
import { HOST_ID } from '../config/etcd.js';
import type { Logger } from '../log.js';
import { coveringEntry } from '../service/ranges.js';
import { message } from './etcd.js';
import {
  type AppliedReport,
  type Desired,
  type FleetKeys,
  type HostRecord,
  isOver,
  newer,
  parseDesired,
  parseHost,
  parseReport,
  type StoredKey,
} from './keys.js';

/** What a key taken from the store was about, for the session to act on. */
export type Taken = { kind: 'stream'; port: number } | { kind: 'host-gone'; id: string } | { kind: 'other' };

export class DesiredCache {
  readonly desired = new Map<number, Desired>();
  /** Revision at which a port's key was seen deleted: an older value must not come back. */
  readonly deletedAt = new Map<number, string>();
  readonly hosts = new Map<string, HostRecord>();
  readonly applied = new Map<string, Map<number, AppliedReport>>();
  /** Stream keys that could not be read, by mod revision: the self-check does not count them as missed. */
  readonly invalid = new Map<number, string>();
  /** The highest revision the watch (or a whole read) has shown this host. */
  seenRevision = '0';

  constructor(
    private readonly keys: FleetKeys,
    private readonly now: () => Date,
    private readonly log: Logger,
  ) {}

  /** Takes a port's value if it is newer than what is known (a value or a deletion). */
  remember(port: number, desired: Desired): void {
    const known = this.desired.get(port);
    const deleted = this.deletedAt.get(port);
    if (known && !newer(desired.modRevision, known.modRevision) && desired.modRevision !== known.modRevision) return;
    if (deleted !== undefined && !newer(desired.modRevision, deleted)) return;
    this.desired.set(port, desired);
    this.deletedAt.delete(port);
  }

  /** Forgets a port's value as of `revision`, unless a newer value is known. */
  forget(port: number, revision: string): void {
    const known = this.desired.get(port);
    if (known && newer(known.modRevision, revision)) return;
    this.desired.delete(port);
    const deleted = this.deletedAt.get(port);
    if (deleted === undefined || newer(revision, deleted)) this.deletedAt.set(port, revision);
  }

  /** Takes a whole read of the streams at `revision`: every port it does not hold is gone. */
  rememberAll(kvs: StoredKey[], revision: string): void {
    const seen = new Set<number>();
    for (const kv of kvs) {
      const port = this.keys.portOfStreamKey(kv.key);
      if (port === undefined) continue;
      try {
        this.remember(port, parseDesired(kv, port));
        this.invalid.delete(port);
        seen.add(port);
      } catch (error) {
        this.invalid.set(port, kv.modRevision);
        this.log.warn('skipped a stream of the fleet store that is not valid', { port, reason: message(error) });
      }
    }
    for (const port of [...this.desired.keys()]) if (!seen.has(port)) this.forget(port, revision);
    for (const port of [...this.invalid.keys()])
      if (!kvs.some((kv) => this.keys.portOfStreamKey(kv.key) === port)) this.invalid.delete(port);
    this.saw(revision);
  }

  /** The watch (or a whole read) has shown everything up to `revision`. */
  saw(revision: string): void {
    if (newer(revision, this.seenRevision)) this.seenRevision = revision;
  }

  /** A whole read of the prefix at `revision`. */
  takeAll(kvs: StoredKey[], revision: string): void {
    this.hosts.clear();
    this.applied.clear();
    const streams = this.keys.streams();
    this.rememberAll(
      kvs.filter((kv) => kv.key.startsWith(streams)),
      revision,
    );
    for (const kv of kvs) if (!kv.key.startsWith(streams)) this.take('put', kv);
  }

  /** One key of the prefix seen (in a read or from the watch); a key that is not valid is skipped. */
  take(kind: 'put' | 'delete', kv: StoredKey): Taken | undefined {
    const key = kv.key.slice(this.keys.prefix.length);
    const parts = key.split('/');
    const [, id = '', last = ''] = parts;
    try {
      if (parts[0] === 'streams') {
        const port = this.keys.portOfStreamKey(kv.key);
        if (port === undefined) return undefined;
        this.takeStream(kind, kv, port);
        return { kind: 'stream', port };
      }
      if (parts[0] === 'hosts' && parts.length === 2 && HOST_ID.test(id)) {
        if (kind === 'put') {
          this.hosts.set(id, parseHost(kv.value, id));
          return { kind: 'other' };
        }
        this.hosts.delete(id);
        this.applied.delete(id);
        return { kind: 'host-gone', id };
      }
      if (parts[0] === 'applied' && parts.length === 3 && HOST_ID.test(id) && /^[0-9]+$/.test(last)) {
        const port = Number(last);
        const reports = this.applied.get(id) ?? new Map<number, AppliedReport>();
        if (kind === 'delete') reports.delete(port);
        else reports.set(port, parseReport(kv.value));
        this.applied.set(id, reports);
      }
      return { kind: 'other' };
    } catch (error) {
      this.log.warn('skipped a key of the fleet store that is not valid', { key, reason: message(error) });
      return undefined;
    }
  }

  private takeStream(kind: 'put' | 'delete', kv: StoredKey, port: number): void {
    if (kind === 'delete') {
      this.forget(port, kv.modRevision);
      this.invalid.delete(port);
      return;
    }
    try {
      this.remember(port, parseDesired(kv, port));
      this.invalid.delete(port);
    } catch (error) {
      this.invalid.set(port, kv.modRevision);
      throw error;
    }
  }

  /**
   * What a port should run, as the fleet sees it: a pending value counts as the state before it,
   * and an expired stream, or one whose drain is over, as none (etcd's lease removes it any moment).
   */
  effective(port: number): StreamRecord | undefined {
    const desired = this.desired.get(port);
    if (!desired) return undefined;
    const record = desired.pending ? desired.pending.previous : desired.record;
    return record && !isOver(record, this.now()) ? record : undefined;
  }

  /** Ports the fleet has a stream on now. */
  effectivePorts(): number[] {
    return [...this.desired.keys()].filter((port) => this.effective(port) !== undefined);
  }

  /** The fleet's streams now, each as `{ record }` (the shape service/ranges.ts checks). */
  effectiveStreams(): Array<{ record: StreamRecord }> {
    return this.effectivePorts().flatMap((port) => {
      const record = this.effective(port);
      return record ? [{ record }] : [];
    });
  }

  /** The key (first port) of the stream that holds `port`: its own, or a range's that covers it. */
  keyOf(port: number): number {
    if (this.effective(port)) return port;
    return coveringEntry(this.effectiveStreams(), port)?.record.port ?? port;
  }
}
