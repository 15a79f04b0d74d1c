/**
 * Convergence of this host: brings its nginx (through the local service) in line with what the
 * fleet wants of each port, one port at a time and in order, and tells the fleet what it made of
 * each (the `applied/<host>/<port>` reports). Keeps what failed, to try again.
 */
import {
  ConductorError,
  ErrorCode,
  formatPorts,
  isPortInRange,
  lastPort,
  type PortRange,
  type StreamRecord,
  type StreamView,
} from '@stream-conductor/shared';
import { bestEffort, type Logger, settled } from '../log.js';
import { drainIsDue } from '../service/drain.js';
import { specOf } from '../service/records.js';
import { sameDefinition, withoutCopies } from './definition.js';
import type { DesiredCache } from './desired.js';
import { message } from './etcd.js';
import { type AppliedReport, newer } from './keys.js';
import type { LocalService } from './local.js';

/**
 * A stream the fleet drains whose key goes away within this much of its deadline has its sessions
 * here cut as at the deadline: the hosts' clocks are not quite the same.
 */
const CLOCK_SLACK_MS = 2000;

/**
 * Whether this host's stream (`here`) drains as the fleet's draining stream (`target`) asks: gone
 * here (drained), or draining to the fleet's deadline (its own expiry when that is sooner, as a
 * host that had not caught up with the fleet's definition may have another).
 */
function drainInLine(here: StreamView | undefined, target: StreamRecord): boolean {
  if (!here) return true;
  if (here.state !== 'draining' || target.drainingUntil === undefined) return false;
  const deadline = Math.min(Date.parse(target.drainingUntil), Date.parse(here.expiresAt ?? '9999-12-31T00:00:00Z'));
  return here.drainingUntil === new Date(deadline).toISOString();
}

/** Where reports go: this host's lease in etcd (see session.ts). */
export interface Reporter {
  /** Whether a report can be written now (etcd answers, this host has its lease). */
  ready(): boolean;
  /** Writes this host's report on a port (undefined: removes it). */
  write(port: number, text: string | undefined): Promise<void>;
}

export interface ConvergenceOptions {
  local: LocalService;
  cache: DesiredCache;
  reporter: Reporter;
  portRange: PortRange;
  log: Logger;
  /** Ports another job holds right now (an automatic allocation): the self-check leaves them alone. */
  busy(port: number): boolean;
  /**
   * Every host reported the fleet's draining stream on `port` drained (as of the key's mod
   * revision `revision`): the key goes, on condition that it is still that revision.
   */
  drained(port: number, revision: string): Promise<void>;
  now: () => Date;
}

export class Convergence {
  /** Desired streams this host could not apply (or remove), with the reason; tried again. */
  readonly failures = new Map<number, string>();
  /** What this host reported last, per port: a report is written only when it changes. */
  private readonly reported = new Map<number, string>();
  /** Ports whose report could not be written: tried again with the failures. */
  private readonly unreported = new Set<number>();
  /** This host's own changes in flight: the state it is applying, before the fleet sees it. */
  private readonly inflight = new Map<number, StreamRecord | null>();
  /** One convergence at a time per port, in order. */
  private readonly chains = new Map<number, Promise<unknown>>();
  /** The key revision of each drained stream this host asked to remove (once per revision). */
  private readonly finished = new Map<number, string>();

  constructor(private readonly options: ConvergenceOptions) {}

  /** This host applies `record` (null: none) on `port` for its own change, until `release`. */
  hold(port: number, record: StreamRecord | null): void {
    this.inflight.set(port, record);
  }

  release(port: number): void {
    this.inflight.delete(port);
  }

  /** Whether this host's own change in flight removes `port`. */
  removing(port: number): boolean {
    return this.inflight.has(port) && this.inflight.get(port) === null;
  }

  /** A new lease holds none of the reports written before. */
  forgetReports(): void {
    this.reported.clear();
  }

  /** What this host should run on a port: its own change in flight, or the fleet's state. */
  private target(port: number): StreamRecord | undefined {
    if (this.inflight.has(port)) return this.inflight.get(port) ?? undefined;
    return this.options.cache.effective(port);
  }

  /** Brings this host's stream on `port` in line; rejects with the local error. */
  converge(port: number, options: { killSessions?: boolean } = {}): Promise<string[]> {
    const previous = this.chains.get(port) ?? Promise.resolve();
    const run = settled(previous).then(() => this.convergeNow(port, options));
    this.chains.set(port, run);
    void settled(run).then(() => {
      if (this.chains.get(port) === run) this.chains.delete(port);
    });
    return run;
  }

  /** Converges `port` in the background: its failure is kept (and retried) by convergeNow. */
  nudge(port: number): Promise<string[] | undefined> {
    return bestEffort(this.options.log, `converge port ${port}`, () => this.converge(port));
  }

  private async convergeNow(port: number, options: { killSessions?: boolean }): Promise<string[]> {
    const target = this.target(port);
    // parseDesired holds every record to its key's port; a stream is only ever put on its own.
    if (target && target.port !== port)
      throw new Error(`the fleet's record for port ${port} names port ${target.port}`);
    const revision = this.options.cache.desired.get(port)?.modRevision ?? '0';
    if (!target) {
      await this.removeHere(port, revision, options);
      return [];
    }
    if (target.drainingUntil !== undefined) {
      await this.drainHere(port, target, revision);
      return [];
    }
    if (!isPortInRange(port, this.options.portRange) || !isPortInRange(lastPort(target), this.options.portRange)) {
      const reason = `port ${formatPorts(target)} is outside this host's PORT_RANGE`;
      this.failures.set(port, reason);
      await this.report(port, { state: 'failed', reason, revision });
      throw new ConductorError(ErrorCode.PortOutOfRange, reason);
    }
    const { local } = this.options;
    let warnings: string[] = [];
    let before = local.get(port);
    if (before?.state !== 'live' || !sameDefinition(before, target)) {
      try {
        // The fleet called a drain off: the port takes connections again, then as the fleet has it.
        if (before?.state === 'draining') {
          await local.undrain(port);
          before = local.get(port);
        }
        if (before?.state !== 'live' || !sameDefinition(before, target))
          warnings = (await local.put(withoutCopies(specOf(target)), undefined, true)).warnings;
      } catch (error) {
        this.failures.set(port, message(error));
        await this.report(port, { state: 'failed', reason: message(error), revision });
        throw error;
      }
    }
    // Reported as this host's pipeline holds it now, not as asked.
    const now = local.get(port);
    if (now?.state !== 'live' || !sameDefinition(now, target)) {
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

  /**
   * The fleet drains the stream: this host's port refuses new connections while its sessions end
   * (its own drain loop removes the stream at the last one, or cuts them at the deadline). A host
   * without it (drained already, or it never served it) has nothing to drain; one that could not
   * serve it (failed) has no sessions and lets it go.
   */
  private async drainHere(port: number, target: StreamRecord, revision: string): Promise<void> {
    const { local } = this.options;
    const here = local.get(port);
    try {
      if (here?.state === 'failed') await local.remove(port);
      else if (here && !drainInLine(here, target)) await local.drainUntil(port, new Date(target.drainingUntil ?? 0));
    } catch (error) {
      this.failures.set(port, message(error));
      await this.report(port, { state: 'failed', reason: message(error), revision });
      throw error;
    }
    this.failures.delete(port);
    await this.report(port, this.drainReport(port, revision));
  }

  /** What this host says of a stream the fleet drains: its sessions still open, or drained. */
  private drainReport(port: number, revision: string): AppliedReport {
    const here = this.options.local.get(port);
    if (here?.state !== 'draining') return { state: 'drained', revision };
    return {
      state: 'draining',
      revision,
      ...(here.openSessions === undefined ? {} : { openSessions: here.openSessions }),
    };
  }

  /** Removes the fleet's draining stream on `port` once every host reports it drained (once per revision). */
  private finishDrain(port: number): void {
    const { cache } = this.options;
    const desired = cache.desired.get(port);
    if (!desired || desired.pending || cache.hosts.size === 0 || this.finished.get(port) === desired.modRevision)
      return;
    for (const id of cache.hosts.keys()) {
      const report = cache.applied.get(id)?.get(port);
      if (report?.state !== 'drained' || newer(desired.modRevision, report.revision)) return;
    }
    this.finished.set(port, desired.modRevision);
    // Asked once per revision; one that failed (etcd away a moment) is asked again at the next look.
    this.options.drained(port, desired.modRevision).catch((error: unknown) => {
      if (this.finished.get(port) === desired.modRevision) this.finished.delete(port);
      this.options.log.warn('could not remove a stream every host drained; trying again', {
        port,
        reason: message(error),
      });
    });
  }

  /** Removes this host's stream on a port the fleet does not have. */
  private async removeHere(port: number, revision: string, options: { killSessions?: boolean }): Promise<void> {
    const { local } = this.options;
    const here = local.get(port);
    if (here) {
      // A drain that ends at its deadline on the fleet (its key's lease) ends so here too: sessions cut.
      const due =
        here.state === 'draining' && drainIsDue(here, new Date(this.options.now().getTime() + CLOCK_SLACK_MS));
      try {
        await local.remove(port, due ? { ...options, killSessions: true } : options);
      } catch (error) {
        if (!(error instanceof ConductorError && error.code === ErrorCode.NotFound)) {
          this.failures.set(port, `could not remove it: ${message(error)}`);
          this.options.log.warn('could not remove a stream the fleet dropped; trying again', {
            port,
            reason: message(error),
          });
          throw error;
        }
      }
    }
    // What this host really serves: a stream its pipeline still holds is not gone.
    const still = local.get(port);
    if (still) {
      const reason = `could not remove it: ${still.reason ?? 'this host still has it'}`;
      this.failures.set(port, reason);
      // Tried again with the failures.
      await this.report(port, { state: 'failed', reason, revision });
      return;
    }
    this.failures.delete(port);
    this.finished.delete(port);
    await this.report(port, undefined);
  }

  /** Tells the fleet what this host made of a port (nothing when etcd is away: a resync does). */
  private async report(port: number, report: AppliedReport | undefined): Promise<void> {
    // Reports are about the fleet's state, not about this host's own change in flight.
    if (this.inflight.has(port)) return;
    const text = report === undefined ? '' : JSON.stringify(report);
    if (this.reported.get(port) === text || !this.options.reporter.ready()) return;
    try {
      await this.options.reporter.write(port, report === undefined ? undefined : text);
      this.reported.set(port, text);
      this.unreported.delete(port);
    } catch (error) {
      this.reported.delete(port);
      this.unreported.add(port);
      this.options.log.warn('could not report to the fleet store; trying again', { port, reason: message(error) });
    }
  }

  /** Tries again what failed (to apply or to report), unless that port converges right now. */
  retry(): void {
    for (const port of new Set([...this.failures.keys(), ...this.unreported])) {
      if (!this.chains.has(port)) void this.nudge(port);
    }
  }

  /**
   * Brings every port whose local state is not what it should be (or whose report says otherwise)
   * in line, unless a change or retry of it runs. Catches a convergence that did not happen.
   */
  checkLocal(): void {
    const { cache, local, log } = this.options;
    const ports = new Set([...cache.desired.keys(), ...local.list().map((stream) => stream.port)]);
    for (const port of ports) {
      if (this.chains.has(port) || this.inflight.has(port) || this.options.busy(port) || this.failures.has(port))
        continue;
      const target = cache.effective(port);
      const here = local.get(port);
      const revision = cache.desired.get(port)?.modRevision ?? '0';
      const draining = target?.drainingUntil !== undefined;
      if (target && draining) this.finishDrain(port);
      const inLine = !target
        ? here === undefined
        : draining
          ? drainInLine(here, target)
          : here?.state === 'live' && sameDefinition(here, target);
      const expected = !target
        ? ''
        : JSON.stringify(draining ? this.drainReport(port, revision) : { state: 'live', revision });
      if (inLine && (this.reported.get(port) ?? '') === expected) continue;
      if (!inLine)
        log.warn('a stream of this host is not what the fleet wants; converging it', {
          port,
          wanted: target ? 'live' : 'none',
          here: here?.state ?? 'none',
        });
      void this.nudge(port);
    }
  }
}
