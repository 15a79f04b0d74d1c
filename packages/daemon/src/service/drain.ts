/**
 * Draining streams: a stream whose port no longer takes new connections while its open sessions
 * end. Starting a drain removes the port from nginx through the verified pipeline and keeps the
 * record, held as draining, in the store and the listing (the port stays taken). Every interval
 * the loop asks the kernel how many sessions nginx still holds on each draining port; a port with
 * none is removed, one past its deadline has its sessions cut and is removed. Calling a drain off
 * puts the same stream back. One change to a port's drain runs at a time (start, call-off, end,
 * remove), so that the listing, the store and nginx never tell different stories.
 */
import {
  ConductorError,
  type CreateResult,
  ErrorCode,
  isPortInRange,
  type PortRange,
  type StreamRecord,
  type StreamView,
} from '@stream-conductor/shared';
import type { Logger } from '../log.js';
import type { Entry, MutationResult } from '../nginx/instance.js';
import type { Observatory } from '../observe/observatory.js';
import type { StreamStore } from '../streams/store.js';
import type { SessionSpan } from '../sys/sessions.js';
import { viewOf } from './records.js';

/**
 * The kernel's sessions that nginx holds on a stream's port, or every port of a range: counted
 * while it drains, cut at its deadline.
 */
export interface SessionControl {
  count(span: SessionSpan): Promise<number>;
  cut(span: SessionSpan): Promise<number>;
}

export interface DrainOptions {
  now: () => Date;
  /** How often the draining ports are looked at; 0: only when asked (tests). */
  intervalMs: number;
  portRange: PortRange;
  store: StreamStore;
  /** The service's map of streams no nginx serves; draining ones live there too. */
  parked: Map<number, Entry>;
  /** The stream on `port` wherever it is (an nginx instance, or parked). */
  entry(port: number): Entry | undefined;
  /** Whether a change to `port` is in flight on its instance (an apply, a create). */
  isHeld(port: number): boolean;
  /** Removes `port` from nginx through the verified pipeline (answers once the kernel refuses it). */
  removeFromNginx(port: number): Promise<unknown>;
  /** Creates `record` on nginx through the verified pipeline. */
  putOnNginx(record: StreamRecord): Promise<MutationResult>;
  sessions: SessionControl | undefined;
  /** The address streams listen on when their definition names none: their sessions are there. */
  defaultListenAddress?: string | undefined;
  log: Logger;
  observatory?: Observatory | undefined;
}

/** Whether `record` drains and its deadline has come at `now`. */
export function drainIsDue(record: Pick<StreamRecord, 'drainingUntil'>, now: Date): boolean {
  return record.drainingUntil !== undefined && Date.parse(record.drainingUntil) <= now.getTime();
}

export class Drains {
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | undefined;
  private readonly counts = new Map<number, number>();
  /** Ports whose drain is starting, being called off, ending or removed: one such change at a time. */
  private readonly busy = new Set<number>();

  constructor(private readonly options: DrainOptions) {}

  start(): void {
    if (this.options.intervalMs <= 0) return;
    this.timer = setInterval(() => void this.look(), this.options.intervalMs);
    this.timer.unref();
  }

  /** Stops the loop, after the look under way. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.sweeping;
  }

  /** One look at every draining port (the loop's step; tests call it directly). */
  look(): Promise<void> {
    this.sweeping ??= this.sweep().finally(() => {
      this.sweeping = undefined;
    });
    return this.sweeping;
  }

  draining(): Entry[] {
    return [...this.options.parked.values()].filter((entry) => entry.state === 'draining');
  }

  isDraining(port: number): boolean {
    return this.options.parked.get(port)?.state === 'draining';
  }

  /** The view of a draining entry, with the sessions still open at the last look. */
  view(entry: Entry): StreamView {
    const view = viewOf(entry);
    const open = this.counts.get(entry.record.port);
    if (entry.state === 'draining' && open !== undefined) view.openSessions = open;
    return view;
  }

  private sessions(): SessionControl {
    const { sessions } = this.options;
    if (!sessions) throw new ConductorError(ErrorCode.NotSupported, 'this daemon cannot see the sessions of a port');
    return sessions;
  }

  /** Runs a change to the drain of `port`, refused while another one is under way. */
  private async step<T>(port: number, step: () => Promise<T>): Promise<T> {
    if (this.busy.has(port))
      throw new ConductorError(ErrorCode.Conflict, `a change to the drain of port ${port} is under way`, {
        hint: 'try again in a moment',
      });
    this.busy.add(port);
    try {
      return await step();
    } finally {
      this.busy.delete(port);
    }
  }

  /**
   * Drains the stream on `port` until `deadline` (or its expiry, when sooner). A stream that
   * drains already gets the new deadline.
   */
  drain(port: number, deadline: Date): Promise<StreamView> {
    return this.step(port, async () => {
      const parked = this.options.parked.get(port);
      const entry = this.options.entry(port);
      if (!entry || (parked && parked.state !== 'draining') || !isPortInRange(port, this.options.portRange))
        throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
      const until = Math.min(deadline.getTime(), Date.parse(entry.record.expiresAt ?? '9999-12-31T00:00:00Z'));
      const record: StreamRecord = { ...entry.record, drainingUntil: new Date(until).toISOString() };
      if (parked) {
        await this.options.store.commit({ put: [record], remove: [] });
        const renewed: Entry = { record, state: 'draining' };
        this.options.parked.set(port, renewed);
        return this.view(renewed);
      }
      if (entry.record.protocol === 'udp')
        throw new ConductorError(
          ErrorCode.InvalidInput,
          `stream ${port} is UDP: the daemon cannot see its sessions to drain them`,
          {
            hint: `remove it (conductor rm ${port}); nginx keeps a UDP session until its idle timeout`,
          },
        );
      const sessions = this.sessions(); // refuses before anything changes when no session can be seen
      if (this.options.isHeld(port))
        throw new ConductorError(ErrorCode.Conflict, `port ${port} is being changed; drain it once that is done`, {
          hint: 'try again in a moment',
        });
      // Held here first, so that no create or apply takes the port between the remove and the store's note.
      const held: Entry = { record, state: 'draining' };
      this.options.parked.set(port, held);
      try {
        await this.options.removeFromNginx(port);
      } catch (error) {
        this.options.parked.delete(port);
        throw error;
      }
      try {
        await this.options.store.commit({ put: [record], remove: [] });
      } catch (error) {
        // The remove stored the stream's removal: put it back rather than lose it unannounced.
        this.options.parked.delete(port);
        await this.options.putOnNginx(entry.record).catch((putError: unknown) =>
          this.options.log.error('a stream whose drain could not be stored could not be put back', {
            port,
            error: putError,
          }),
        );
        throw error;
      }
      try {
        this.counts.set(port, await sessions.count(this.spanOf(record)));
      } catch (error) {
        this.options.log.warn('could not count the sessions of a draining port yet', { port, error });
      }
      return this.view(held);
    });
  }

  /** Calls the drain of `port` off: the same stream takes connections again (answered once it does). */
  undrain(port: number): Promise<CreateResult> {
    return this.step(port, async () => {
      const parked = this.options.parked.get(port);
      if (parked?.state !== 'draining')
        throw new ConductorError(ErrorCode.NotFound, `stream ${port} is not draining`, {
          hint: this.options.entry(port) ? undefined : `no stream is on port ${port}`,
        });
      const { drainingUntil: _until, ...rest } = parked.record;
      const record: StreamRecord = { ...rest, updatedAt: this.options.now().toISOString() };
      // The port stays held as draining until nginx serves it again (or refuses to).
      const result = await this.options.putOnNginx(record);
      this.options.parked.delete(port);
      this.counts.delete(port);
      const stream = result.entry ? viewOf(result.entry) : undefined;
      if (!stream) throw new ConductorError(ErrorCode.Internal, `stream ${port} vanished after it was applied`);
      return { stream, warnings: result.warnings, change: 'replaced' };
    });
  }

  /** Removes a draining stream at once (`rm`); its sessions are cut when asked. */
  remove(port: number, killSessions: boolean): Promise<{ warnings: string[] }> {
    return this.step(port, async () => {
      const drained = this.options.parked.get(port);
      if (drained?.state !== 'draining')
        throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
      const warnings: string[] = [];
      await this.forget(port);
      if (killSessions) {
        const cut = await this.cut(this.spanOf(drained.record));
        if (cut.error !== undefined) warnings.push(`its sessions could not be cut: ${cut.error}`);
      }
      return { warnings };
    });
  }

  private async forget(port: number): Promise<void> {
    await this.options.store.commit({ put: [], remove: [port] });
    this.options.parked.delete(port);
    this.counts.delete(port);
  }

  /** The ports of a stream and the address its sessions are on. */
  private spanOf(record: StreamRecord): SessionSpan {
    return {
      port: record.port,
      portEnd: record.portEnd,
      listenAddress: record.listenAddress ?? this.options.defaultListenAddress,
    };
  }

  private async cut(span: SessionSpan): Promise<{ cut: number; error?: string }> {
    try {
      return { cut: await this.sessions().cut(span) };
    } catch (error) {
      this.options.log.warn('could not cut the sessions of a drained port', { port: span.port, error });
      return { cut: 0, error: error instanceof Error ? error.message : String(error) };
    }
  }

  private async sweep(): Promise<void> {
    for (const { record } of this.draining()) {
      const port = record.port;
      try {
        const open = await this.sessions().count(this.spanOf(record));
        this.counts.set(port, open);
        if (open > 0 && !drainIsDue(record, this.options.now())) continue;
        await this.end(record, open);
      } catch (error) {
        if (error instanceof ConductorError && error.code === ErrorCode.Conflict) continue; // a change under way
        this.options.log.warn('a draining stream could not be looked at; trying again', { port, error });
      }
    }
    for (const port of [...this.counts.keys()]) if (!this.isDraining(port)) this.counts.delete(port);
  }

  /** Ends the drain of `record`: its sessions cut when some are left, then removed. */
  private end(record: StreamRecord, open: number): Promise<void> {
    const port = record.port;
    return this.step(port, async () => {
      // A drain called off or given a new deadline meanwhile is not this one.
      if (this.options.parked.get(port)?.record !== record) return;
      const cut = open > 0 ? await this.cut(this.spanOf(record)) : { cut: 0 };
      // The port is closed already: the stream goes even when its sessions could not be cut.
      await this.forget(port);
      const detail =
        open === 0
          ? 'drained: its last session ended'
          : cut.error === undefined
            ? `drain deadline: ${cut.cut} session(s) cut`
            : `drain deadline: ${open} session(s) could not be cut (${cut.error})`;
      this.options.log.info('drained stream removed', { port, open, drainingUntil: record.drainingUntil });
      this.options.observatory?.record({
        actor: 'daemon',
        remote: '',
        action: 'remove',
        ports: [port],
        detail,
        result: 'ok',
      });
    });
  }
}
