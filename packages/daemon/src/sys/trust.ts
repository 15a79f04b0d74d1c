/**
 * Whether anyone but this user and root can change what is in a folder. The daemon's home holds
 * files that nginx, running as root, opens and includes (its configuration, its logs); a folder
 * another user can write, or can swap for a symbolic link because a folder above it is theirs or
 * open to all, would let that user make root write or read where they choose. The same reasoning
 * as OpenSSH's StrictModes: every folder on the way must belong to this user or root and be
 * writable by no one else, except that a folder with the sticky bit (such as /tmp) may be open to
 * all above the folder itself, since nobody can rename or remove another user's entry there.
 */
import { realpath, stat } from 'node:fs/promises';
import { dirname } from 'node:path';

export interface Identity {
  uid: number;
  gid: number;
}

const octal = (mode: number): string => `0${(mode & 0o7777).toString(8)}`;

/**
 * Why another user could change what the folder `path` holds, or undefined if none can. A folder
 * yet to be made is judged by the folders it would be made in.
 */
export async function untrustedBecause(path: string, me: Identity): Promise<string | undefined> {
  let real = path;
  let exists = true;
  for (let at = path; ; at = dirname(at)) {
    try {
      real = await realpath(at);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || at === dirname(at)) throw error;
      exists = false;
    }
  }
  for (let dir = real; ; dir = dirname(dir)) {
    const info = await stat(dir);
    if (info.uid !== me.uid && info.uid !== 0) return `${dir} belongs to another user (uid ${info.uid})`;
    const byOthers = (info.mode & 0o002) !== 0;
    // A group's members may write; the daemon's own group, or root's, are no one else.
    const byGroup = (info.mode & 0o020) !== 0 && info.gid !== me.gid && info.gid !== 0;
    const sticky = (info.mode & 0o1000) !== 0;
    if ((byOthers || byGroup) && ((exists && dir === real) || !sticky)) {
      return `${dir} can be written by other users (mode ${octal(info.mode)})`;
    }
    if (dir === dirname(dir)) return undefined;
  }
}
