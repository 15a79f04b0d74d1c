/**
 * The queue of one master: changes that arrive while a reload is in flight are applied together
 * in the next one, because nginx handles only about ten reloads a second. Batches, recoveries and
 * audits run one at a time (see exclusive).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { ConductorError, ErrorCode } from '@stream-conductor/shared';
import { settled } from '../../log.js';
import { type InstanceState, RELOAD_PAUSE_MS } from './state.js';
import type { Mutation, MutationResult, Pending } from './types.js';

/** About how long a batch takes when the master does not pause (a handoff). */
const BATCH_MS = 15;
/** A batch is formed this long before the master's pause ends: time to write the files. */
const GATHER_LEAD_MS = 3;

export const shuttingDown = (): ConductorError =>
  new ConductorError(ErrorCode.ShuttingDown, 'the daemon is shutting down and takes no more changes');

export class BatchQueue {
  private queue: Pending[] = [];
  private draining = false;
  private chain: Promise<void> = Promise.resolve();
  /** idle: nothing queued; gathering: waiting out the master's pause, taking more changes; applying: a batch is in flight. */
  private phase: 'idle' | 'gathering' | 'applying' = 'idle';

  constructor(
    private readonly state: InstanceState,
    /** Applies one batch; its requests are answered inside. */
    private readonly applyBatch: (batch: Pending[]) => Promise<void>,
  ) {}

  /**
   * About how long a change submitted now would wait before its reload could start: nothing when
   * the master is idle, the rest of its post-reload pause, or a whole pause when a batch is in
   * flight. Used to place new streams on the master that can take them soonest.
   */
  expectedWaitMs(now = Date.now()): number {
    const paused = Math.max(0, this.state.pausedUntil - now);
    return this.phase === 'applying' ? paused + (this.state.pauses ? RELOAD_PAUSE_MS : BATCH_MS) : paused;
  }

  /** Queues a change; resolves once it is live, rejects with the reason it was refused. */
  submit(mutation: Mutation): Promise<MutationResult> {
    if (this.state.closing) return Promise.reject(shuttingDown());
    return new Promise((resolve, reject) => {
      this.queue.push({ mutation, resolve, reject });
      void this.drain();
    });
  }

  /** Runs `task` when no batch or recovery is running, and keeps others out until it is done. */
  exclusive<T>(task: () => Promise<T>): Promise<T> {
    const run = this.chain.then(task);
    this.chain = settled(run);
    return run;
  }

  /** Waits out the master's pause after the last reload. */
  async waitForPause(): Promise<void> {
    const wait = this.state.pausedUntil - Date.now();
    if (wait > 0) await sleep(wait);
  }

  /** Refuses what is queued (the daemon shuts down) and settles once the running task is done. */
  async close(): Promise<void> {
    for (const item of this.queue.splice(0)) item.reject(shuttingDown());
    await this.chain;
  }

  /**
   * Applies what is queued, batch after batch. While the master pauses after a reload (it would
   * not take the next one before the pause ends anyway), the batch stays open and takes every
   * change that arrives; it is closed just before the pause ends.
   */
  private async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.queue.length > 0) {
        const wait = this.state.pausedUntil - Date.now() - GATHER_LEAD_MS;
        if (wait > 0) {
          this.phase = 'gathering';
          await sleep(wait);
        }
        this.phase = 'applying';
        const batch = this.nextBatch();
        await this.exclusive(() => this.applyBatch(batch)).catch((error: unknown) => {
          this.state.log.error('apply failed unexpectedly', { error });
          const failure = new ConductorError(ErrorCode.Internal, 'internal error while applying the change', {
            cause: error,
          });
          for (const item of batch) item.reject(failure);
        });
      }
    } finally {
      this.draining = false;
      this.phase = 'idle';
    }
  }

  /** A group goes alone (all or nothing); everything else that queued up goes together. */
  private nextBatch(): Pending[] {
    const groupAt = this.queue.findIndex((item) => item.mutation.kind === 'group');
    return groupAt === 0 ? this.queue.splice(0, 1) : this.queue.splice(0, groupAt < 0 ? this.queue.length : groupAt);
  }
}
