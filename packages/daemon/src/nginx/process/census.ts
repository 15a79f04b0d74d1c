/**
 * The processes of a managed nginx beyond its master's own workers: what is left below the
 * reaper after handoffs, workers without a master, a second master of the same configuration.
 * Read for the audit and to know which old processes a change must wait for.
 */
import { childPids, isReaper, nginxChildren, nginxMasters, strayWorkers } from '../../sys/processes.js';

/** The processes below the reaper other than the master (old masters and workers of handoffs). */
export async function belowReaper(reaper: number | undefined, master: number | undefined): Promise<number[]> {
  return reaper !== undefined && isReaper(reaper) ? (await childPids(reaper)).filter((pid) => pid !== master) : [];
}

export interface Household {
  master: number;
  reaper: number | undefined;
  /** The error log every process of this nginx holds open (how its strays are recognised). */
  errorLogPath: string;
  /** The main configuration its masters run. */
  confPath: string;
}

/**
 * For the audit: the master, how many workers it has taking connections, and every other
 * process of ours (its old workers draining, what a handoff or a dead daemon left, a second
 * master of the same configuration).
 */
export async function processesOf({
  master,
  reaper,
  errorLogPath,
  confPath,
}: Household): Promise<{ master: number; workers: number; others: number[] }> {
  const others = new Set<number>();
  if (reaper !== undefined && isReaper(reaper)) for (const pid of await childPids(reaper)) others.add(pid);
  for (const pid of await strayWorkers(errorLogPath, master)) others.add(pid);
  for (const { pid } of await nginxMasters(confPath)) others.add(pid);
  // The master's own children are its workers, even one just forked that still has the master's
  // title; only the old ones, told to quit, must have closed their listeners.
  const children = await childPids(master);
  for (const pid of children) others.delete(pid);
  const draining = nginxChildren(master)
    .filter((child) => child.draining)
    .map((child) => child.pid);
  for (const pid of draining) others.add(pid);
  others.delete(master);
  const workers = children.filter((pid) => !draining.includes(pid)).length;
  return { master, workers, others: [...others] };
}
