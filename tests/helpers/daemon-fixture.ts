/**
 * The one start/stop fixture of the e2e and fault suites: the daemons and folders a suite takes
 * from it are stopped, cleared of leftover processes (an nginx a killed daemon left behind) and
 * removed when the block that made the fixture ends, whatever its tests did.
 */

import { dirname } from 'node:path';
import { afterAll } from '@jest/globals';
import { type Daemon, type DaemonOptions, removeDir, startDaemon, tempDir } from './daemon.js';
import { killProcessesUsing } from './processes.js';

export class DaemonFixture {
  private readonly daemons: Daemon[] = [];
  private readonly dirs: string[] = [];
  private readonly steps: Array<() => Promise<unknown>> = [];

  /**
   * Starts a daemon and waits until its API answers. It is stopped at clean-up if still running;
   * the temporary folder made for it (none when `options.home` is given) is removed then.
   */
  async start(options: DaemonOptions = {}): Promise<Daemon> {
    const daemon = await startDaemon(options);
    this.daemons.push(daemon);
    if (options.home === undefined) this.dirs.push(dirname(daemon.home));
    return daemon;
  }

  /** Starts a daemon, runs `use` with it and stops it (SIGTERM) however `use` ends. */
  async run<T>(options: DaemonOptions, use: (daemon: Daemon) => Promise<T>): Promise<T> {
    const daemon = await this.start(options);
    try {
      return await use(daemon);
    } finally {
      await daemon.stop();
    }
  }

  /** A temporary folder, removed at clean-up. */
  async dir(): Promise<string> {
    const dir = await tempDir();
    this.dirs.push(dir);
    return dir;
  }

  /** Work for clean-up once the daemons have stopped, before the folders go (unmount, stop etcd). */
  beforeRemoving(step: () => Promise<unknown>): void {
    this.steps.push(step);
  }

  /** Stops every daemon, runs the deferred steps, kills what still uses the folders, removes them. */
  async cleanup(): Promise<void> {
    for (const daemon of this.daemons.splice(0)) await daemon.stop();
    for (const step of this.steps.splice(0)) await step();
    for (const dir of this.dirs.splice(0)) {
      killProcessesUsing(`${dir}/`);
      await removeDir(dir);
    }
  }
}

/** A fixture cleaned up after the tests of the block it is made in (a describe, or the file). */
export function daemonFixture(): DaemonFixture {
  const fixture = new DaemonFixture();
  afterAll(() => fixture.cleanup());
  return fixture;
}
