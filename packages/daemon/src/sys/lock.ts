/** One daemon per home and per stream folder: a pid file that a live daemon holds. */
import { open, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, StartupError } from '@stream-conductor/shared';
import { bestEffort, type Logger } from '../log.js';
import { commandLine, isAlive } from './processes.js';

/** Another daemon holds the lock, or it cannot be taken: this daemon does not start. */
export class LockError extends StartupError {
  override readonly name = 'LockError';

  constructor(message: string) {
    super(message, { code: ErrorCode.AlreadyRunning });
  }
}

export interface Lock {
  release(): Promise<void>;
}

/**
 * The pid in the lock file, or 0 when there is none to read: a file that cannot be read counts as
 * stale, like the file of a process that is gone.
 */
async function ownerOf(path: string, log: Logger): Promise<number> {
  return Number(((await bestEffort(log, `reading the lock file ${path}`, readFile(path, 'utf8'))) ?? '').trim());
}

/** Takes `<folder>/<name>`; a stale file (its process gone or not a daemon) is taken over. */
export async function acquireLock(folder: string, name: string, what: string, log: Logger): Promise<Lock> {
  const path = join(folder, name);
  for (let attempt = 0; attempt < 2; attempt += 1) {
    try {
      const handle = await open(path, 'wx', 0o644);
      await handle.writeFile(`${process.pid}\n`);
      await handle.close();
      return {
        release: async () => {
          if ((await ownerOf(path, log)) !== process.pid) return;
          await bestEffort(log, `removing the lock file ${path}`, unlink(path), 'warn');
        },
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const owner = await ownerOf(path, log);
    const command = Number.isInteger(owner) && owner > 0 && isAlive(owner) ? await commandLine(owner) : undefined;
    if (command !== undefined && owner !== process.pid && /node|conductor/.test(command)) {
      throw new LockError(`another daemon (pid ${owner}) already uses ${what} ${folder}`);
    }
    await bestEffort(log, `removing the stale lock file ${path}`, unlink(path), 'warn');
  }
  throw new LockError(`cannot take the lock ${path}`);
}
