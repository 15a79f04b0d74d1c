/**
 * Draining streams: a stream whose port no longer takes new connections while its open sessions
 * end. Every interval the loop asks the kernel how many established TCP sessions each draining
 * port still has; a port with none is removed, and one past its deadline has its sessions cut and
 * is removed. The count of each port is kept for the listing.
 */
import type { StreamRecord } from '@stream-conductor/shared';
import type { Logger } from '../log.js';
import type { Observatory } from '../observe/observatory.js';

export interface DrainOptions {
  now: () => Date;
  /** How often the draining ports are looked at. */
  intervalMs: number;
  /** The draining streams this host holds. */
  draining(): Iterable<StreamRecord>;
  /** Established TCP sessions whose local port is `port`, from the kernel. */
  sessions(port: number): Promise<number>;
  /** Cuts the established sessions of `port`; answers how many there were. */
  cut(port: number): Promise<number>;
  /**
   * Removes the draining stream `record`; false when the port holds something else by now (the
   * drain was cancelled, or the stream removed).
   */
  finish(record: StreamRecord): Promise<boolean>;
  log: Logger;
  observatory?: Observatory | undefined;
}

/** Whether `record` drains, and its deadline has come at `now`. */
export function drainIsDue(record: Pick<StreamRecord, 'drainingUntil'>, now: Date): boolean {
  return record.drainingUntil !== undefined && Date.parse(record.drainingUntil) <= now.getTime();
}

export class DrainLoop {
  private timer: NodeJS.Timeout | undefined;
  private readonly counts = new Map<number, number>();
  private sweeping: Promise<void> | undefined;

  constructor(private readonly options: DrainOptions) {}

  start(): void {
    this.timer = setInterval(() => {
      this.sweeping ??= this.sweep().finally(() => {
        this.sweeping = undefined;
      });
    }, this.options.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** The sessions still open on a draining port at the last look; undefined before the first. */
  openSessions(port: number): number | undefined {
    return this.counts.get(port);
  }

  /** Sets the count of a port that just started to drain, so that the listing shows it at once. */
  noteSessions(port: number, open: number): void {
    this.counts.set(port, open);
  }

  /** One look at every draining port. */
  async sweep(): Promise<void> {
    const { log, observatory } = this.options;
    for (const record of [...this.options.draining()]) {
      const port = record.port;
      try {
        const open = await this.options.sessions(port);
        this.counts.set(port, open);
        if (open > 0 && !drainIsDue(record, this.options.now())) continue;
        const cut = open > 0 ? await this.options.cut(port) : 0;
        if (!(await this.options.finish(record))) continue;
        this.counts.delete(port);
        const detail = cut > 0 ? `drain deadline: ${cut} session(s) cut` : 'drained: its last session ended';
        log.info('drained stream removed', { port, cut, drainingUntil: record.drainingUntil });
        observatory?.record({ actor: 'daemon', remote: '', action: 'remove', ports: [port], detail, result: 'ok' });
      } catch (error) {
        log.warn('a draining stream could not be looked at; trying again', { port, error });
      }
    }
    for (const port of [...this.counts.keys()])
      if (![...this.options.draining()].some((record) => record.port === port)) this.counts.delete(port);
  }
}
