/**
 * File writes that are never seen half-done: write a temporary file beside, then rename.
 *
 * The small files of the apply pipeline (a per-stream file is a few hundred bytes, on a local
 * disk) are read and written with synchronous calls: each takes microseconds, where the promise
 * API costs a multiple of that in overhead, and a burst of changes does thousands of them. Only
 * the flush to disk (fsync), which can take milliseconds, stays asynchronous.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { open, readdir, unlink } from 'node:fs/promises';
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
  if (!options.durable) {
    writeSmallFileAtomic(path, temp, content, options.mode);
    return;
  }
  const handle = await open(temp, 'wx', options.mode ?? 0o644);
  try {
    try {
      await handle.writeFile(content);
      await handle.sync();
    } finally {
      await handle.close();
    }
    renameSync(temp, path);
  } catch (error) {
    await unlink(temp).catch(() => undefined); // best effort: the original error is the one to report
    throw error;
  }
  await syncFolder(dirname(path));
}

function writeSmallFileAtomic(path: string, temp: string, content: string, mode: number | undefined): void {
  const fd = openSync(temp, 'wx', mode ?? 0o644);
  try {
    try {
      const data = Buffer.from(content, 'utf8');
      for (let written = 0; written < data.length; ) written += writeSync(fd, data, written, data.length - written);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, path);
  } catch (error) {
    try {
      unlinkSync(temp);
    } catch {
      // best effort: the original error is the one to report
    }
    throw error;
  }
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
    return readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** Removes a file; a file already gone is fine. */
export async function removeIfExists(path: string): Promise<void> {
  try {
    unlinkSync(path);
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
