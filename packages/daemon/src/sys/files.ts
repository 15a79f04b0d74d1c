/**
 * File writes that are never seen half-done: write a temporary file beside, then rename.
 *
 * The small files of the apply pipeline (a per-stream file is a few hundred bytes, on a local
 * disk) are read and written with synchronous calls: each takes microseconds, where the promise
 * API costs a multiple of that in overhead, and a burst of changes does thousands of them. Only
 * the flush to disk (fsync), which can take milliseconds, stays asynchronous.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, renameSync, unlinkSync, writevSync } from 'node:fs';
import { type FileHandle, open, readdir, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** Temporary files start with this, so that no `*.conf` glob ever matches them. */
export const TEMP_PREFIX = '.tmp-';

export function tempPathFor(path: string): string {
  return join(dirname(path), `${TEMP_PREFIX}${basename(path)}.${randomBytes(4).toString('hex')}`);
}

/**
 * What a file is written from: a string, or its bytes in pieces (a file assembled from parts kept
 * between writes, with no copy of the whole).
 */
export type FileContent = string | readonly Buffer[];

/** The kernel takes at most this many pieces in one writev. */
const MAX_PIECES = 1024;

function piecesOf(content: FileContent): Buffer[] {
  return typeof content === 'string' ? [Buffer.from(content, 'utf8')] : content.filter((piece) => piece.length > 0);
}

/** Where writing `pieces` resumes once `written` more bytes from piece `at` are written. */
function advance(pieces: Buffer[], at: number, written: number): number {
  let next = at;
  let left = written;
  while (next < pieces.length && left >= (pieces[next] as Buffer).length) left -= (pieces[next++] as Buffer).length;
  if (left > 0) pieces[next] = (pieces[next] as Buffer).subarray(left);
  return next;
}

/** Writes every byte of `content` to `fd`, however many calls that takes. */
function writeAllSync(fd: number, content: FileContent): void {
  const pieces = piecesOf(content);
  for (let at = 0; at < pieces.length; ) at = advance(pieces, at, writevSync(fd, pieces.slice(at, at + MAX_PIECES)));
}

async function writeAll(handle: FileHandle, content: FileContent): Promise<void> {
  const pieces = piecesOf(content);
  for (let at = 0; at < pieces.length; )
    at = advance(pieces, at, (await handle.writev(pieces.slice(at, at + MAX_PIECES))).bytesWritten);
}

/**
 * Replaces `path` with `content` atomically. With `durable`, the data and the folder entry are
 * flushed to disk before it returns, so the new content survives a power cut.
 */
export async function writeFileAtomic(
  path: string,
  content: FileContent,
  options: { durable?: boolean; mode?: number } = {},
): Promise<void> {
  const temp = tempPathFor(path);
  if (!options.durable) {
    writeSmallFileAtomic(path, temp, content, options.mode);
    return;
  }
  const handle = await open(temp, 'wx', options.mode ?? 0o644);
  try {
    try {
      await writeAll(handle, content);
      await handle.sync();
    } finally {
      await handle.close();
    }
    renameSync(temp, path);
  } catch (error) {
    discardTemporary(temp);
    throw error;
  }
  await syncFolder(dirname(path));
}

function writeSmallFileAtomic(path: string, temp: string, content: FileContent, mode: number | undefined): void {
  const fd = openSync(temp, 'wx', mode ?? 0o644);
  try {
    try {
      writeAllSync(fd, content);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, path);
  } catch (error) {
    discardTemporary(temp);
    throw error;
  }
}

/**
 * Removes the temporary file of a write that failed. Its own failure is dropped on purpose: the
 * write's error is the one to report, and a leftover harms nothing (its name starts with
 * TEMP_PREFIX, which no `*.conf` glob matches; removeTemporaries clears them at start-up).
 */
function discardTemporary(temp: string): void {
  try {
    unlinkSync(temp);
  } catch {
    // See above: the write's error is the one that matters.
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
/**
 * Inode, size and modification time of each file (or why it cannot be looked at), as one string:
 * a file replaced, rewritten or gone changes it. What the watchers of renewed files compare.
 */
export async function filesSignature(files: ReadonlyArray<string | undefined>): Promise<string> {
  const parts: string[] = [];
  for (const file of files) {
    if (file === undefined) continue;
    try {
      const { size, mtimeMs, ino } = await stat(file);
      parts.push(`${ino}:${size}:${mtimeMs}`);
    } catch (error) {
      parts.push((error as NodeJS.ErrnoException).code ?? 'unreadable');
    }
  }
  return parts.join('|');
}

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
