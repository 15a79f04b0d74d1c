/**
 * Streams whose time is up: the expiry rule, the drop of what expired while the daemon was down,
 * and the loop that removes expired streams while it runs.
 */
import { ConductorError, ErrorCode, type StreamRecord } from '@stream-conductor/shared';
import type { Logger } from '../log.js';
import type { Observatory } from '../observe/observatory.js';
import type { StreamStore } from '../streams/store.js';

/** Whether `record` has expired at `now`. */
export function isExpired(record: Pick<StreamRecord, 'expiresAt'>, now: Date): boolean {
  return record.expiresAt !== undefined && Date.parse(record.expiresAt) <= now.getTime();
}

/** Removes from the store, and from `records`, the streams that expired while the daemon was down. */
export async function dropExpired(
  records: Map<number, StreamRecord>,
  store: StreamStore,
  now: Date,
  log: Logger,
): Promise<void> {
  const expired = [...records.values()].filter((record) => isExpired(record, now));
  if (expired.length === 0) return;
  await store.commit({ put: [], remove: expired.map((record) => record.port) });
  for (const record of expired) {
    records.delete(record.port);
    log.info('stream expired while the daemon was down', { port: record.port, expiresAt: record.expiresAt });
  }
}

export interface ExpiryOptions {
  now: () => Date;
  /** How often expired streams are looked for. */
  intervalMs: number;
  /** Every stream this host holds. */
  records(): Iterable<StreamRecord>;
  /** Removes a stream through the verified pipeline. */
  remove(port: number): Promise<unknown>;
  log: Logger;
  observatory?: Observatory | undefined;
}

/** Removes the streams whose time is up, each through the verified pipeline, every interval. */
export class ExpiryLoop {
  private timer: NodeJS.Timeout | undefined;
  /** Ports whose removal is under way, so that a slow one is not started twice. */
  private readonly expiring = new Set<number>();
  /**
   * Whether this host removes expired streams itself. A fleet's etcd removes them (their leases
   * end) while it answers; the host does it only when cut off from it.
   */
  private expiresLocally: () => boolean = () => true;

  constructor(private readonly options: ExpiryOptions) {}

  setGate(gate: () => boolean): void {
    this.expiresLocally = gate;
  }

  start(): void {
    this.timer = setInterval(() => this.sweep(), this.options.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  private sweep(): void {
    if (!this.expiresLocally()) return;
    const { log, observatory } = this.options;
    for (const record of this.options.records()) {
      if (!isExpired(record, this.options.now()) || this.expiring.has(record.port)) continue;
      this.expiring.add(record.port);
      this.options
        .remove(record.port)
        .then(() => {
          log.info('stream expired and was removed', { port: record.port, expiresAt: record.expiresAt });
          observatory?.record({
            actor: 'daemon',
            remote: '',
            action: 'expire',
            ports: [record.port],
            detail: `expired at ${record.expiresAt ?? ''}`,
            result: 'ok',
          });
        })
        .catch((error: unknown) => {
          // A renewal or removal that won the race is fine; anything else is tried again next round.
          if (!(error instanceof ConductorError && error.code === ErrorCode.NotFound)) {
            log.warn('expired stream could not be removed yet', { port: record.port, error });
          }
        })
        .finally(() => this.expiring.delete(record.port));
    }
  }
}
