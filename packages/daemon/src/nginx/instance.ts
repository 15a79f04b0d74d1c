/**
 * The apply pipeline of one nginx master: the heart of the daemon, and the one door other code
 * uses. Every change is queued (pipeline/queue.ts) and applied in batches (pipeline/batches.ts):
 * each request is checked (pipeline/admission.ts), then brought live by a change transaction
 * (pipeline/transaction.ts: write the per-stream files atomically, test and reload nginx, prove
 * the result from the kernel, persist the change, and only then answer). When nginx refuses, the
 * files go back to their exact previous bytes; the requests nginx's message blames
 * (pipeline/blame.ts) are refused with that message and the rest are tried again. Recovery after
 * nginx died and the retry of set-aside streams live in pipeline/recovery.ts, the periodic audit
 * in pipeline/audit-loop.ts; what they share is pipeline/state.ts.
 */
import type { NginxAudit, NginxStatus, StreamRecord } from '@stream-conductor/shared';
import type { Logger } from '../log.js';
import { AuditLoop } from './pipeline/audit-loop.js';
import { BatchApplier } from './pipeline/batches.js';
import { BatchQueue } from './pipeline/queue.js';
import { Recovery } from './pipeline/recovery.js';
import { InstanceState } from './pipeline/state.js';
import type { Entry, InstanceOptions, Mutation, MutationResult } from './pipeline/types.js';
import type { NginxController } from './process/controller.js';
import type { StreamFileSet } from './stream-files.js';

export { portBlamed } from './pipeline/blame.js';
export { RELOAD_PAUSE_MS } from './pipeline/state.js';
export type { Entry, InstanceOptions, Mutation, MutationResult, PortChange } from './pipeline/types.js';

export class NginxInstance {
  readonly log: Logger;
  private readonly state: InstanceState;
  private readonly queue: BatchQueue;
  private readonly recovery: Recovery;
  private readonly audits: AuditLoop;

  constructor(options: InstanceOptions) {
    const state = new InstanceState(options);
    this.state = state;
    this.log = state.log;
    const applier = new BatchApplier(state, () => this.recovery.scheduleRevival());
    this.queue = new BatchQueue(state, (batch) => applier.applyBatch(batch));
    this.recovery = new Recovery(state, this.queue, applier, () => this.audits.schedule());
    this.audits = new AuditLoop(state, this.queue, () => this.recovery.scheduleRecovery(0));
    options.controller.onUnexpectedExit((message) => {
      this.log.error('nginx died; restarting it', { reason: message });
      this.recovery.scheduleRecovery(0);
    });
  }

  get id(): number {
    return this.state.id;
  }

  get controller(): NginxController {
    return this.state.options.controller;
  }

  get files(): StreamFileSet {
    return this.state.options.files;
  }

  /** Takes the definitions this instance serves; call before reconcile(). */
  load(records: StreamRecord[]): void {
    for (const record of records) this.state.entries.set(record.port, { record, state: 'live' });
  }

  list(): Entry[] {
    return [...this.state.entries.values()];
  }

  get(port: number): Entry | undefined {
    return this.state.entries.get(port);
  }

  /** See BatchQueue.expectedWaitMs: used to place new streams on the master that can take them soonest. */
  expectedWaitMs(now = Date.now()): number {
    return this.queue.expectedWaitMs(now);
  }

  /**
   * A reload with nothing changed, between batches: nginx's master opens its log files anew and
   * hands them to new workers (which, as an unprivileged user, may not be able to reopen them).
   */
  reloadUnchanged(): Promise<void> {
    return this.queue.exclusive(async () => {
      await this.queue.waitForPause();
      const outcome = await this.state.reload();
      if (!outcome.ok) this.log.warn('a reload to reopen the logs did not take', { reason: outcome.message });
    });
  }

  /** Queues a change; resolves once it is live, rejects with the reason it was refused. */
  submit(mutation: Mutation): Promise<MutationResult> {
    return this.queue.submit(mutation);
  }

  /**
   * Brings nginx in line at start-up. Never throws: when nginx cannot run at all, the daemon
   * keeps serving its API, reports nginx down, and keeps trying with a growing delay.
   */
  start(): Promise<void> {
    return this.recovery.start();
  }

  /**
   * Makes the files and nginx match the definitions: at start-up, and after nginx died. Every
   * definition is tried, also those set aside before; what nginx cannot take is set aside again
   * with the reason, and the rest is served.
   */
  reconcile(): Promise<void> {
    return this.recovery.reconcile();
  }

  /** See Recovery.reviveHeldPorts: at start-up, set-aside ports another of our masters let go of. */
  reviveHeldPorts(timeoutMs: number): Promise<void> {
    return this.recovery.reviveHeldPorts(timeoutMs);
  }

  /** nginx's status with what the last audit found. */
  status(): NginxStatus {
    const status = this.state.options.controller.status();
    const audit = this.audits.lastAudit;
    return audit ? { ...status, audit } : status;
  }

  /** One audit now, between changes (see AuditLoop). */
  audit(): Promise<NginxAudit | undefined> {
    return this.audits.run();
  }

  /** Refuses new changes, lets the running batch finish, and stops nginx (managed mode). */
  async close(): Promise<void> {
    this.state.closing = true;
    this.audits.close();
    this.recovery.close();
    await this.queue.close();
    await this.state.options.controller.stop();
  }
}
