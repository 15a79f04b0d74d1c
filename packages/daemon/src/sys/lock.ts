/** One daemon per home and per stream folder: a pid file that a live daemon holds. */
import { open, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { commandLine, isAlive } from './processes.js';

export class LockError extends Error {
  override readonly name = 'LockError';
}

export interface Lock {
  release(): Promise<void>;
}

/** Takes `<folder>/<name>`; a stale file (its process gone or not a daemon) is taken over. */
export async function acquireLock(folder: string, name: string, what: string): Promise<Lock> {
  const path = join(folder, name);
  for (let attempt = 0; attempt < 2; attempt += 1) {
    try {
      const handle = await open(path, 'wx', 0o644);
      await handle.writeFile(`${process.pid}\n`);
      await handle.close();
      return {
        release: async () => {
          const owner = Number((await readFile(path, 'utf8').catch(() => '')).trim());
          if (owner === process.pid) await unlink(path).catch(() => undefined);
        },
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const owner = Number((await readFile(path, 'utf8').catch(() => '')).trim());
    const command = Number.isInteger(owner) && owner > 0 && isAlive(owner) ? await commandLine(owner) : undefined;
    if (command !== undefined && owner !== process.pid && /node|conductor/.test(command)) {
      throw new LockError(`another daemon (pid ${owner}) already uses ${what} ${folder}`);
    }
    await unlink(path).catch(() => undefined);
  }
  throw new LockError(`cannot take the lock ${path}`);
}
