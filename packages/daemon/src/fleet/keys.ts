/**
 * The fleet's key schema in etcd, and the parsing and formatting of its keys and values.
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
 * Nothing here does I/O: keys and values are plain text in, typed values out.
 */
import { printable, type StreamRecord } from '@stream-conductor/shared';
import { recordFromJson } from '../streams/record.js';

/**
 * How long a draining stream's key outlives its deadline: each host's own drain ends it at the
 * deadline (sessions cut), then etcd removes the key.
 */
const DRAIN_GRACE_MS = 5000;

/**
 * When etcd should remove a stream's key (undefined: never): at its expiry, or once its drain is
 * over, whichever comes first.
 */
export function keyEnd(record: StreamRecord): number | undefined {
  const ends = [record.expiresAt, record.drainingUntil]
    .map((at, i) => (at === undefined ? undefined : Date.parse(at) + (i === 1 ? DRAIN_GRACE_MS : 0)))
    .filter((end): end is number => end !== undefined);
  return ends.length === 0 ? undefined : Math.min(...ends);
}

/** Whether a stream's key has come to its end (expired, or its drain over): it stands for nothing. */
export function isOver(record: StreamRecord, now: Date): boolean {
  const end = keyEnd(record);
  return end !== undefined && end <= now.getTime();
}

/** A change being written: the stream it makes (null: removed) and the state before it. */
export interface Pending {
  previous: StreamRecord | null;
  remove: boolean;
  at: string;
}

/** A port's key as etcd holds it. */
export interface Desired {
  record: StreamRecord;
  modRevision: string;
  /** The lease the key is attached to ('0': none). */
  lease: string;
  /** The host and operation that wrote it: a retried transaction recognizes its own write. */
  by: string;
  op: string;
  pending?: Pending;
}

export interface AppliedReport {
  /** draining: the port refuses new connections here, `openSessions` still open; drained: none left, gone here. */
  state: 'live' | 'failed' | 'draining' | 'drained';
  reason?: string;
  openSessions?: number;
  /** The mod revision of the desired key this report is about. */
  revision: string;
}

export interface HostRecord {
  id: string;
  api: string;
  version: string;
  startedAt: string;
}

/** One key as the store holds it, in text. */
export interface StoredKey {
  key: string;
  value: string;
  modRevision: string;
  /** The lease the key is attached to ('0': none). */
  lease: string;
}

/** Whether etcd revision `a` comes after `b` (revisions are 64-bit integers in decimal text). */
export const newer = (a: string, b: string): boolean => BigInt(a) > BigInt(b);

/** The end of etcd's range of every key that starts with `prefix`. */
export function prefixEnd(prefix: string): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i -= 1) {
    if ((end[i] as number) < 0xff) {
      end[i] = (end[i] as number) + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

/** The keys of one fleet (one prefix). */
export class FleetKeys {
  private readonly streamKey: RegExp;

  constructor(readonly prefix: string) {
    this.streamKey = new RegExp(`^${this.streams().replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}([1-9][0-9]{0,4})$`);
  }

  stream(port: number): string {
    return `${this.prefix}streams/${port}`;
  }

  streams(): string {
    return `${this.prefix}streams/`;
  }

  host(id: string): string {
    return `${this.prefix}hosts/${id}`;
  }

  applied(id: string, port: number): string {
    return `${this.prefix}applied/${id}/${port}`;
  }

  /** The port a stream key names, or undefined when `key` is no stream key. */
  portOfStreamKey(key: string): number | undefined {
    const match = this.streamKey.exec(key);
    if (!match) return undefined;
    const port = Number(match[1]);
    return port <= 65535 ? port : undefined;
  }
}

/** The value of a stream key while a change is being written. */
export function pendingValue(
  record: StreamRecord | null | undefined,
  by: string,
  op: string,
  pending: Pending,
): string {
  return JSON.stringify({ record, by, op, pending });
}

/** The value of a stream key once a change is settled. */
export function settledValue(record: StreamRecord, by: string, op: string): string {
  return JSON.stringify({ record, by, op });
}

export function parseDesired(kv: Pick<StoredKey, 'value' | 'modRevision' | 'lease'>, port: number): Desired {
  const value = JSON.parse(kv.value) as { record?: unknown; by?: unknown; op?: unknown; pending?: unknown };
  const record = recordFromJson(value.record);
  if (record.port !== port) throw new Error(`the record of port ${port} names port ${record.port}`);
  const desired: Desired = {
    record,
    modRevision: kv.modRevision,
    lease: kv.lease,
    by: typeof value.by === 'string' ? value.by : '',
    op: typeof value.op === 'string' ? value.op : '',
  };
  if (value.pending !== undefined && value.pending !== null) {
    const pending = value.pending as { previous?: unknown; remove?: unknown; at?: unknown };
    const previous =
      pending.previous === null || pending.previous === undefined ? null : recordFromJson(pending.previous);
    if (previous !== null && previous.port !== port)
      throw new Error(`the state before a pending change of port ${port} names port ${previous.port}`);
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

const REPORT_STATES: ReadonlySet<unknown> = new Set(['live', 'failed', 'draining', 'drained']);

export function parseReport(text: string): AppliedReport {
  const value = JSON.parse(text) as Partial<AppliedReport>;
  if (!REPORT_STATES.has(value.state) || typeof value.revision !== 'string' || !/^[0-9]+$/.test(value.revision)) {
    throw new Error('not a report');
  }
  const sessions = value.openSessions;
  return {
    state: value.state as AppliedReport['state'],
    revision: value.revision,
    ...(typeof value.reason === 'string' ? { reason: printable(value.reason, MAX_REASON) } : {}),
    ...(value.state === 'draining' && Number.isSafeInteger(sessions) && (sessions as number) >= 0
      ? { openSessions: sessions as number }
      : {}),
  };
}

export function parseHost(text: string, id: string): HostRecord {
  const value = JSON.parse(text) as Partial<HostRecord> | null;
  if (
    value === null ||
    typeof value !== 'object' ||
    value.id !== id ||
    typeof value.api !== 'string' ||
    typeof value.version !== 'string' ||
    typeof value.startedAt !== 'string'
  ) {
    throw new Error('not a host');
  }
  const startedAt = Number.isNaN(Date.parse(value.startedAt))
    ? new Date(0).toISOString()
    : new Date(value.startedAt).toISOString();
  return { id, api: printable(value.api, MAX_FIELD), version: printable(value.version, MAX_FIELD), startedAt };
}
