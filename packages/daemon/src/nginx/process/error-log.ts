/** Keeps a managed nginx's error log bounded: copied aside and emptied in place past a size. */
import { copyFile, rm, stat, truncate } from 'node:fs/promises';
import { bestEffort, type Logger } from '../../log.js';

/**
 * Keeps the error log at `path` under `maxBytes`. Every new master writes a line there as it
 * starts (the sockets it inherits, before its configuration sets the level), so handoffs make it
 * grow. It is copied to `path`.1 and emptied in place rather than renamed: every nginx process
 * keeps writing to it (opened for appending), the failures of the next reload included.
 */
export async function trimErrorLog(path: string, maxBytes: number | undefined, log: Logger): Promise<void> {
  if (maxBytes === undefined) return;
  const older = `${path}.1`;
  try {
    if ((await stat(path)).size <= maxBytes) return;
    // A line nginx writes between the copy and the emptying is lost; no reload runs meanwhile.
    await copyFile(path, older);
    await truncate(path, 0);
  } catch (error) {
    await bestEffort(log, 'remove half a copy of the error log', rm(older, { force: true })); // a full disk, say
    log.warn('could not trim the nginx error log', { error });
  }
}
