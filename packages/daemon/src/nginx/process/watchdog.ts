/**
 * The watchdog of a managed nginx master: notices a master that died without an exit event (an
 * adopted one is not the daemon's child) or was stopped (SIGSTOP), and has it brought back. A
 * stopped master takes no reload, so the daemon could apply nothing.
 */
import type { Logger } from '../../log.js';
import { isAlive, processState, signal } from '../../sys/processes.js';

/** What the watchdog looks at, and tells. */
export interface WatchedMaster {
  /** The master's pid; undefined when none runs. */
  pid(): number | undefined;
  /** Whether the daemon is stopping it (then nothing is an incident). */
  stopping(): boolean;
  /** Whether the master is the daemon's own child: its exit is an event, reported elsewhere. */
  isChild(): boolean;
  /** Whether the daemon holds a child process for it (the master, or the reaper above it); none for an adopted master. */
  hasChild(): boolean;
  /** The master is gone (or was killed here and is not our child): it must be started anew. */
  lost(message: string): void;
  incident(message: string): void;
  log: Logger;
}

export class Watchdog {
  private timer: NodeJS.Timeout | undefined;
  /** Rounds the master has been seen stopped in a row. */
  private stoppedRounds = 0;

  constructor(private readonly master: WatchedMaster) {}

  get running(): boolean {
    return this.timer !== undefined;
  }

  /**
   * Every round: an adopted master (not our child, so no exit event) that is gone counts as
   * died; a master found stopped (SIGSTOP) gets SIGCONT, and one still stopped the next round is
   * killed so that a new one can be started.
   */
  start(intervalMs: number): void {
    this.stop();
    this.stoppedRounds = 0;
    this.timer = setInterval(() => void this.inspect(), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private async inspect(): Promise<void> {
    const { master } = this;
    const pid = master.pid();
    if (pid === undefined || master.stopping()) return;
    if (!isAlive(pid)) {
      if (master.isChild()) return; // the exit event reports it
      master.lost(
        master.hasChild() ? `nginx exited unexpectedly (master ${pid} is gone)` : 'the adopted nginx master is gone',
      );
      return;
    }
    const state = await processState(pid);
    if (state !== 'T' && state !== 't') {
      if (this.stoppedRounds > 0) master.log.info('nginx master runs again', { pid });
      this.stoppedRounds = 0;
      return;
    }
    this.stoppedRounds += 1;
    if (this.stoppedRounds === 1) {
      master.log.warn('nginx master stopped; resuming it', { pid });
      master.incident(`nginx master ${pid} was found stopped (SIGSTOP); sent SIGCONT`);
      signal(pid, 'SIGCONT');
      return;
    }
    master.log.error('nginx master still stopped; replacing it', { pid });
    master.incident(`nginx master ${pid} stayed stopped; killed it to start a new one`);
    this.stop();
    signal(pid, 'SIGKILL');
    if (!master.isChild()) master.lost('the nginx master was stopped and had to be killed');
  }
}
