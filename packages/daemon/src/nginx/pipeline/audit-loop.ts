/**
 * The audit of one master on a timer, between changes (a change in flight legitimately has two
 * generations): strays are told to go (see audit.ts), and a master found serving other ports than
 * the definitions twice in a row is brought back in line by a reconcile, as after a crash.
 */
import { type NginxAudit, portsOf, protocolsOf } from '@stream-conductor/shared';
import { NginxAuditor } from './audit.js';
import type { BatchQueue } from './queue.js';
import type { InstanceState } from './state.js';

export class AuditLoop {
  private readonly auditor: NginxAuditor;
  private timer: NodeJS.Timeout | undefined;
  private last: NginxAudit | undefined;
  /** Audits in a row that found the master serving something other than the definitions. */
  private outOfLine = 0;

  constructor(
    private readonly state: InstanceState,
    private readonly queue: BatchQueue,
    /** Brings the master back in line (a reconcile). */
    private readonly recover: () => void,
  ) {
    this.auditor = new NginxAuditor({
      processes: () => state.options.controller.auditProcesses(),
      expected: () => {
        const expected = new Set<string>();
        for (const entry of state.entries.values()) {
          if (entry.state === 'live')
            for (const protocol of protocolsOf(entry.record))
              for (const port of portsOf(entry.record)) expected.add(`${protocol}:${port}`);
        }
        return expected;
      },
    });
  }

  /** What the last audit found; undefined when it could give no verdict. */
  get lastAudit(): NginxAudit | undefined {
    return this.last;
  }

  /** One audit, between changes. */
  run(): Promise<NginxAudit | undefined> {
    return this.queue
      .exclusive(async () => {
        const findings = await this.auditor.run();
        if (!findings) {
          this.last = undefined; // no master, or none that may be read: no verdict to show
          return undefined;
        }
        this.last = findings.audit;
        this.report(findings.audit, findings.signalled);
        return findings.audit;
      })
      .then((audit) => {
        if (this.outOfLine >= 2) {
          this.outOfLine = 0;
          this.state.log.error('bringing nginx back in line with the definitions');
          this.recover();
        }
        return audit;
      });
  }

  /** The next audit, unless one is due or audits are off; again after each. */
  schedule(): void {
    const interval = this.state.options.auditIntervalMs ?? 5000;
    if (this.state.closing || this.timer || interval <= 0) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.run()
        .catch((error: unknown) => this.state.log.error('the audit failed', { error }))
        .finally(() => this.schedule());
    }, interval);
    this.timer.unref();
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
  }

  /** Logs and reports the strays signalled and a master out of line; counts the rounds out of line. */
  private report(audit: NginxAudit, signalled: Array<{ pid: number; signal: string; ports: number[] }>): void {
    const { log, options } = this.state;
    const observer = options.observer;
    for (const stray of signalled) {
      log.warn('a stray nginx process of ours held ports; ending it', {
        pid: stray.pid,
        signal: stray.signal,
        ports: stray.ports,
      });
      observer?.finding?.(
        options.id,
        'audit',
        stray.ports,
        `stray nginx process ${stray.pid} held ports; sent ${stray.signal}`,
      );
    }
    // No worker: nginx could not fork the new generation (a process limit, say) and told the old
    // one to quit: nothing accepts on any port until a reload gets workers started again.
    const workerless = audit.workers === 0 && !audit.inLine && audit.strays === 0;
    const differs = audit.missing.length > 0 || audit.extra.length > 0 || workerless;
    this.outOfLine = differs ? this.outOfLine + 1 : 0;
    if (differs) {
      log.error('nginx serves other ports than the definitions', {
        missing: audit.missing,
        extra: audit.extra,
        workers: audit.workers,
        rounds: this.outOfLine,
      });
      const what = workerless
        ? 'no worker takes connections'
        : `missing ${audit.missing.join(',') || '-'}, extra ${audit.extra.join(',') || '-'}`;
      if (this.outOfLine === 1)
        observer?.finding?.(options.id, 'audit', [...audit.missing, ...audit.extra], `out of line: ${what}`);
    }
  }
}
