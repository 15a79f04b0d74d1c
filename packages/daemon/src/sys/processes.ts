/** Process facts read from /proc: children of a process, its command line, whether it lives. */
import { readFileSync } from 'node:fs';
import { readdir, readlink } from 'node:fs/promises';
import { procStat, procStatAsync } from './proc-stat.js';

/** Sends `name` to `pid`; false when there is no such process (gone already) or no pid. */
export function signal(pid: number | undefined, name: NodeJS.Signals): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, name);
    return true;
  } catch {
    return false;
  }
}

/** Whether a process exists and is not a zombie waiting to be reaped. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const stat = procStat(pid);
  // No /proc (or it ended just now): kill(0) is all we know.
  return stat === undefined ? true : stat.state !== 'Z';
}

/** The pids of `pid`'s children; empty when the process is gone. */
export async function childPids(pid: number): Promise<number[]> {
  try {
    // Polled every few milliseconds while a reload runs: a synchronous read of /proc is cheap.
    return listedChildren(pid);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  // Kernels without CONFIG_PROC_CHILDREN: scan /proc for the parent pid.
  if (!isAlive(pid)) return [];
  const children: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^[0-9]+$/.test(entry)) continue;
    // undefined: the process ended while we looked
    if ((await procStatAsync(entry))?.ppid === pid) children.push(Number(entry));
  }
  return children;
}

/** The command line of a process, its arguments joined by spaces; undefined when it is gone. */
export async function commandLine(pid: number): Promise<string | undefined> {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0+$/, '').replace(/\0/g, ' ');
  } catch {
    return undefined;
  }
}

/** The parent pid of a process; undefined when it is gone. */
export async function parentPid(pid: number): Promise<number | undefined> {
  return parentOf(pid);
}

/** Whether `pid` has `path` open (one of its /proc/<pid>/fd links points at it). */
export async function holdsFile(pid: number, path: string): Promise<boolean> {
  let fds: string[];
  try {
    fds = await readdir(`/proc/${pid}/fd`);
  } catch {
    return false;
  }
  for (const fd of fds) {
    try {
      if ((await readlink(`/proc/${pid}/fd/${fd}`)) === path) return true;
    } catch {
      // closed while we looked
    }
  }
  return false;
}

/**
 * nginx worker processes whose master is gone (or is not `currentMaster`) and that hold
 * `errorLog` open, which marks them as workers of our nginx and no one else's. A master killed
 * with SIGKILL leaves its workers running, still holding every listening socket.
 */
export async function strayWorkers(errorLog: string, currentMaster: number | undefined): Promise<number[]> {
  const stray: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^[0-9]+$/.test(entry)) continue;
    const pid = Number(entry);
    const command = await commandLine(pid);
    if (!command?.startsWith('nginx: worker process') && !command?.startsWith('nginx: cache')) continue;
    const parent = await parentPid(pid);
    if (parent !== undefined && parent === currentMaster) continue;
    if (await holdsFile(pid, errorLog)) stray.push(pid);
  }
  return stray;
}

/** The one-letter state of a process (R, S, D, T, t, Z...); undefined when it is gone. */
export async function processState(pid: number): Promise<string | undefined> {
  return (await procStatAsync(pid))?.state;
}

/** When a process started, from /proc (its start in clock ticks after boot, and the boot time). */
export function processStartedAt(pid: number): Date | undefined {
  const ticks = procStat(pid)?.startTicks;
  if (ticks === undefined) return undefined;
  try {
    const boot = Number(/^btime ([0-9]+)$/m.exec(readFileSync('/proc/stat', 'utf8'))?.[1]);
    if (!Number.isFinite(ticks) || !Number.isFinite(boot)) return undefined;
    return new Date((boot + ticks / 100) * 1000); // USER_HZ is 100 on Linux
  } catch {
    return undefined;
  }
}

/** The worker processes of an nginx master, each marked when it is an old one draining sessions. */
export function nginxChildren(master: number): Array<{ pid: number; draining: boolean }> {
  const found: Array<{ pid: number; draining: boolean }> = [];
  for (const pid of childrenOf(master)) {
    let command: string;
    try {
      command = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (command.includes('is shutting down')) found.push({ pid, draining: true });
    else if (command.startsWith('nginx: worker process')) found.push({ pid, draining: false });
  }
  // After a handoff the old master is gone and its workers, draining their sessions, are the
  // reaper's children: they are still this nginx's.
  const reaper = parentOf(master);
  if (reaper !== undefined && isReaper(reaper)) {
    for (const pid of childrenOf(reaper)) {
      if (pid === master) continue;
      try {
        if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith('nginx: worker process'))
          found.push({ pid, draining: true });
      } catch {
        // gone
      }
    }
  }
  return found;
}

/** The title the process that starts a managed nginx and reaps its processes gives itself. */
export const NGINX_REAPER_TITLE = 'conductor: nginx reaper';

/** Whether `pid` is the reaper of a managed nginx (see ManagedNginx). */
export function isReaper(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith(NGINX_REAPER_TITLE);
  } catch {
    return false;
  }
}

/** `pid`'s children as the kernel lists them; throws when it cannot (the process is gone, or no CONFIG_PROC_CHILDREN). */
function listedChildren(pid: number): number[] {
  const text = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
  return text === '' ? [] : text.split(/\s+/).map(Number);
}

/** `pid`'s children as the kernel lists them; none when it cannot say. */
function childrenOf(pid: number): number[] {
  try {
    return listedChildren(pid);
  } catch {
    return [];
  }
}

/** The parent pid of a process, read synchronously (it is polled during a handoff); undefined when it is gone. */
function parentOf(pid: number): number | undefined {
  return procStat(pid)?.ppid;
}

/** The children of an nginx master, told apart: workers taking connections, old ones draining. */
export function nginxWorkers(master: number): { workers: number; draining: number } {
  const children = nginxChildren(master);
  const draining = children.filter((child) => child.draining).length;
  return { workers: children.length - draining, draining };
}

/** The nginx masters running the configuration file `conf`, each with its parent. */
export async function nginxMasters(conf: string): Promise<Array<{ pid: number; parent: number | undefined }>> {
  const masters: Array<{ pid: number; parent: number | undefined }> = [];
  for (const entry of await readdir('/proc')) {
    if (!/^[0-9]+$/.test(entry)) continue;
    const pid = Number(entry);
    const command = await commandLine(pid);
    if (command === undefined || !command.startsWith('nginx: master process') || !command.split(' ').includes(conf))
      continue;
    if ((await processState(pid)) === 'Z') continue;
    masters.push({ pid, parent: await parentPid(pid) });
  }
  return masters;
}
