/**
 * After the daemon renamed an access log away, nginx must write to a new file. SIGUSR1 (reopen)
 * makes the master reopen its logs as root and tell the workers to do the same; but the workers
 * reopen as their unprivileged user, and where they cannot reach the folder (a home under /root,
 * a folder made with mode 0700) they keep writing to the renamed file. Then a reload does it: the
 * master opens the files and hands them to new workers.
 */

import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../log.js';
import { holdsFile, nginxChildren } from '../sys/processes.js';

export interface LogWriter {
  /** The nginx master's pid, when one runs. */
  master(): number | undefined;
  /** SIGUSR1 or `nginx -s reopen`. */
  reopen(): Promise<void>;
  /** A reload with nothing changed. */
  reload(): Promise<void>;
}

/** Whether a process of the nginx of `master` (itself or a worker, old or new) holds `path` open. */
export async function writtenBy(master: number | undefined, path: string): Promise<boolean> {
  if (master === undefined) return false;
  for (const pid of [master, ...nginxChildren(master).map((child) => child.pid)]) {
    if (await holdsFile(pid, path)) return true;
  }
  return false;
}

/** Whether a worker taking new sessions (not an old one draining) still holds `path` open. */
async function servingWorkersHold(master: number | undefined, path: string): Promise<boolean> {
  if (master === undefined) return false;
  for (const child of nginxChildren(master)) {
    if (!child.draining && (await holdsFile(child.pid, path))) return true;
  }
  return false;
}

/** Makes nginx let go of `rotated`: a reopen, and a reload when the workers kept the old file. */
export async function releaseLog(
  writer: LogWriter,
  rotated: string,
  log: Logger,
  waitMs = 200,
): Promise<'reopened' | 'reloaded'> {
  await writer.reopen();
  const deadline = Date.now() + waitMs;
  do {
    await sleep(25);
    if (!(await servingWorkersHold(writer.master(), rotated))) return 'reopened';
  } while (Date.now() < deadline);
  log.info(
    'nginx workers could not reopen the access log as their user; reloading so that the master hands them the new one',
    { path: rotated },
  );
  await writer.reload();
  return 'reloaded';
}
