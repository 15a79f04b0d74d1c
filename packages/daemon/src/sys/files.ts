/** File writes that are never seen half-done: write a temporary file beside, then rename. */
import { randomBytes } from 'node:crypto';
import { open, readFile, readdir, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** Temporary files start with this, so that no `*.conf` glob ever matches them. */
export const TEMP_PREFIX = '.tmp-';

export function tempPathFor(path: string): string {
  return join(dirname(path), `${TEMP_PREFIX}${basename(path)}.${randomBytes(4).toString('hex')}`);
}

/**
 * Replaces `path` with `content` atomically. With `durable`, the data and the folder entry are
 * flushed to disk before it returns, so the new content survives a power cut.
 */
export async function writeFileAtomic(path: string, content: string, options: { durable?: boolean; mode?: number } = {}): Promise<void> {
  const temp = tempPathFor(path);
  const handle = await open(temp, 'wx', options.mode ?? 0o644);
  try {
    try {
      await handle.writeFile(content);
      if (options.durable) await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, path);
  } catch (error) {
    await unlink(temp).catch(() => undefined); // best effort: the original error is the one to report
    throw error;
  }
  if (options.durable) await syncFolder(dirname(path));
}

export async function syncFolder(folder: string): Promise<void> {
  const handle = await open(folder, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** The file's content, or undefined when it does not exist. */
export async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** Removes a file; a file already gone is fine. */
export async function removeIfExists(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

/** Removes the temporary files an interrupted write left in `folder`. */
export async function removeTemporaries(folder: string): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await readdir(folder)) {
    if (!name.startsWith(TEMP_PREFIX)) continue;
    await removeIfExists(join(folder, name));
    removed.push(name);
  }
  return removed;
}
