/**
 * Recovery of one master: nginx brought back in line after it died or could not start (with a
 * growing delay), and set-aside definitions tried again on a timer, so that a stream comes back by
 * itself once its port is free again or its backend name resolves again.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describeBackends, protocolsOf } from '@stream-conductor/shared';
import { probeReason } from '../../sys/ports.js';
import type { BatchApplier } from './batches.js';
import type { BatchQueue } from './queue.js';
import { probeEach } from './ranges.js';
import { reconcile } from './reconcile.js';
import type { InstanceState } from './state.js';
import type { Accepted, Entry, Pending } from './types.js';

const FIRST_RECOVERY_DELAY_MS = 500;
const MAX_RECOVERY_DELAY_MS = 30_000;

export class Recovery {
  private recoverTimer: NodeJS.Timeout | undefined;
  private recoverDelayMs = FIRST_RECOVERY_DELAY_MS;
  private reviveTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly state: InstanceState,
    private readonly queue: BatchQueue,
    private readonly applier: BatchApplier,
    /** Told each time nginx is in line again (the audit starts then). */
    private readonly onInLine: () => void,
  ) {}

  /**
   * Brings nginx in line at start-up. Never throws: when nginx cannot run at all, the daemon
   * keeps serving its API, reports nginx down, and keeps trying with a growing delay.
   */
  async start(): Promise<void> {
    try {
      await this.reconcile();
    } catch (error) {
      this.state.log.error('nginx could not be started; trying again', { error, inMs: this.recoverDelayMs });
      this.scheduleRecovery(this.recoverDelayMs);
    }
  }

  /** See reconcile.ts; runs between batches. */
  reconcile(): Promise<void> {
    return this.queue.exclusive(async () => {
      await reconcile(this.state);
      this.recoverDelayMs = FIRST_RECOVERY_DELAY_MS;
      this.scheduleRevival();
      this.onInLine();
    });
  }

  /** A reconcile in `delayMs`, unless one is already due; failures retry with a doubling delay. */
  scheduleRecovery(delayMs: number): void {
    if (this.state.closing || this.recoverTimer) return;
    this.recoverTimer = setTimeout(() => {
      this.recoverTimer = undefined;
      this.reconcile().catch((error: unknown) => {
        this.recoverDelayMs = Math.min(this.recoverDelayMs * 2, MAX_RECOVERY_DELAY_MS);
        this.state.log.error('nginx could not be restarted; trying again', { error, inMs: this.recoverDelayMs });
        this.scheduleRecovery(this.recoverDelayMs);
      });
    }, delayMs);
  }

  /** The next try of the set-aside definitions, when there are any and none is due. */
  scheduleRevival(): void {
    if (this.state.closing || this.reviveTimer) return;
    if (this.state.failed().length === 0) return;
    this.reviveTimer = setTimeout(() => {
      this.reviveTimer = undefined;
      this.queue
        .exclusive(() => this.reviveNow())
        .catch((error: unknown) => this.state.log.error('trying set-aside streams again failed', { error }))
        .finally(() => this.scheduleRevival());
    }, this.state.options.retryIntervalMs ?? 30_000);
    this.reviveTimer.unref();
  }

  /**
   * At start-up, after every master is in line: a stream set aside because its port could not be
   * bound may have been held by another of our masters that has let it go since (a remove or a
   * move cut short when the earlier daemon died). Waits up to `timeoutMs` for such ports to be
   * free, then tries them again, instead of at the next retry.
   */
  reviveHeldPorts(timeoutMs: number): Promise<void> {
    const { state } = this;
    const retry = this.queue.exclusive(async () => {
      const held = (): Entry[] =>
        state.failed().filter((entry) => /bind\(\).*Address already in use/.test(entry.reason ?? ''));
      if (held().length === 0) return;
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        let free = true;
        for (const entry of held()) {
          const { probe } = await probeEach(entry.record, (port) =>
            state.options.probePort(port, protocolsOf(entry.record), state.listenAddressOf(entry.record)),
          );
          if (probe !== 'free') free = false;
        }
        if (free || Date.now() > deadline) break;
        await sleep(50);
      }
      await this.reviveNow();
    });
    // Start-up goes on whatever happens here: the streams stay set aside, tried again later.
    return retry.catch((error: unknown) => state.log.error('trying set-aside streams again failed', { error }));
  }

  /** Stops the timers (the daemon shuts down). */
  close(): void {
    if (this.recoverTimer) clearTimeout(this.recoverTimer);
    if (this.reviveTimer) clearTimeout(this.reviveTimer);
  }

  /** Tries the set-aside definitions whose ports are free again, as replacements of themselves. */
  private async reviveNow(): Promise<void> {
    const { state } = this;
    const failed = state.failed();
    if (failed.length === 0 || state.closing || !(await state.options.controller.isRunning())) return;
    const accepted: Accepted[] = [];
    for (const entry of failed) {
      const { port } = entry.record;
      const probe = await state.options.probePort(port, protocolsOf(entry.record), state.listenAddressOf(entry.record));
      if (probe !== 'free') {
        entry.reason = probeReason(probe);
        continue;
      }
      const item: Pending = {
        mutation: { kind: 'put', record: entry.record },
        resolve: () =>
          state.log.info('set-aside stream is live again', { port, backends: describeBackends(entry.record.backends) }),
        reject: (error) => {
          entry.reason = error.message.replace(/^nginx refused the stream on port [0-9]+: /, 'nginx: ');
        },
      };
      accepted.push({ item, port, next: { record: entry.record, state: 'live' }, revive: true, change: 'replaced' });
    }
    if (accepted.length > 0) await this.applier.applyAccepted(accepted);
  }
}
