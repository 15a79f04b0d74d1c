/**
 * What the steps of one master's pipeline share: its options and log, the entries it serves, and
 * the reloads it runs, with the pause nginx's master takes after each one.
 */
import { performance } from 'node:perf_hooks';
import type { StreamRecord } from '@stream-conductor/shared';
import type { Logger } from '../../log.js';
import type { ReloadOutcome } from '../process/controller.js';
import type { Entry, InstanceOptions } from './types.js';

/** After each reload an nginx master sleeps this long before it handles the next signal. */
export const RELOAD_PAUSE_MS = 100;

export class InstanceState {
  /** The definitions this master serves, by port; replaced whole once a change is stored. */
  entries = new Map<number, Entry>();
  /** Set once the daemon shuts down: no more changes, no more timers. */
  closing = false;
  /** Until when nginx's master pauses after our last reload (see RELOAD_PAUSE_MS). */
  pausedUntil = 0;
  /** Whether this master pauses after a reload (SIGHUP) or not (handoffs); see BatchQueue.expectedWaitMs. */
  pauses = true;
  readonly log: Logger;

  constructor(readonly options: InstanceOptions) {
    this.log = options.log.child({ instance: options.id });
  }

  get id(): number {
    return this.options.id;
  }

  listenAddressOf(record: StreamRecord): string | undefined {
    return record.listenAddress ?? this.options.defaultListenAddress;
  }

  /** Reloads, and remembers whether the master now pauses (a handoff leaves no pause behind). */
  async reload(options?: { urgent?: boolean }): Promise<ReloadOutcome> {
    const started = performance.now();
    const outcome = await this.options.controller.reload(options);
    if (outcome.ok) {
      this.pauses = outcome.pauses !== false;
      this.pausedUntil = this.pauses ? Date.now() + RELOAD_PAUSE_MS : 0;
    }
    this.options.observer?.reload(this.options.id, outcome.ok, (performance.now() - started) / 1000);
    return outcome;
  }

  /** The entries that are set aside (failed), tried again by the revival. */
  failed(): Entry[] {
    return [...this.entries.values()].filter((entry) => entry.state === 'failed');
  }
}
