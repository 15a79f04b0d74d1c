/**
 * Whether anyone but this user and root can change what is in a folder. The daemon's home holds
 * files that nginx, running as root, opens and includes (its configuration, its logs); a folder
 * another user can write, or can swap for a symbolic link because a folder above it (or a link
 * on the way to it) is theirs or open to all, would let that user make root write or read where
 * they choose. The same reasoning as OpenSSH's StrictModes: every folder and link on the way, as
 * written and as resolved, must belong to this user or root, and no folder may be writable by
 * anyone else, except that a folder with the sticky bit (such as /tmp) may be open to all above
 * the folder itself, since nobody can rename or remove another user's entry there.
 */
import { lstat, realpath, stat } from 'node:fs/promises';
import { dirname, resolve, sep } from 'node:path';

export interface Identity {
  uid: number;
  /** The daemon's groups: their members are the daemon's own (or root's) people. */
  gids: number[];
}

const octal = (mode: number): string => `0${(mode & 0o7777).toString(8)}`;

/** Every path from the root down to `path` (absolute), itself included. */
function prefixes(path: string): string[] {
  const parts = path.split(sep).filter((part) => part !== '');
  return [sep, ...parts.map((_, i) => `${sep}${parts.slice(0, i + 1).join(sep)}`)];
}

/** The longest part of `path` that exists (`path` itself when it does). */
async function existingPart(path: string): Promise<string> {
  for (let at = path; ; at = dirname(at)) {
    try {
      await lstat(at);
      return at;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || at === dirname(at)) throw error;
    }
  }
}

/** Why `info` (of `dir`) lets another user change its entries, or undefined. */
function openFolder(
  dir: string,
  info: { uid: number; gid: number; mode: number },
  me: Identity,
  isTheFolder: boolean,
): string | undefined {
  if (info.uid !== me.uid && info.uid !== 0) return `${dir} belongs to another user (uid ${info.uid})`;
  const byOthers = (info.mode & 0o002) !== 0;
  const byGroup = (info.mode & 0o020) !== 0 && info.gid !== 0 && !me.gids.includes(info.gid);
  const sticky = (info.mode & 0o1000) !== 0;
  if ((byOthers || byGroup) && (isTheFolder || !sticky))
    return `${dir} can be written by other users (mode ${octal(info.mode)})`;
  return undefined;
}

/**
 * Why another user could change what the folder `path` holds, or undefined if none can. A folder
 * yet to be made is judged by the folders it would be made in.
 */
export async function untrustedBecause(path: string, me: Identity): Promise<string | undefined> {
  const given = resolve(path);
  const existing = await existingPart(given);
  const exists = existing === given;
  // As written: a link on the way must be this user's or root's, as must every folder.
  for (const at of prefixes(existing)) {
    const info = await lstat(at);
    if (info.isSymbolicLink()) {
      if (info.uid !== me.uid && info.uid !== 0)
        return `${at} is a link that belongs to another user (uid ${info.uid})`;
    } else if (info.isDirectory()) {
      const reason = openFolder(at, info, me, exists && at === given);
      if (reason !== undefined) return reason;
    } else if (at === existing) {
      return `${at} is not a folder`;
    }
  }
  // As resolved: the folders the links lead to, and the ones above them.
  const real = await realpath(existing);
  for (const at of prefixes(real)) {
    const info = await stat(at);
    if (!info.isDirectory()) return `${at} is not a folder`;
    const reason = openFolder(at, info, me, exists && at === real);
    if (reason !== undefined) return reason;
  }
  return undefined;
}
