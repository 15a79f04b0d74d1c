/**
 * Adoption: the nginx master an earlier daemon on the same home left running, found at start so
 * that it is taken over rather than killed, and streams keep flowing across a daemon restart.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../../log.js';
import { childPids, commandLine, isAlive, nginxMasters, processState } from '../../sys/processes.js';
import { discardMaster, type Handoffs } from './handoff.js';

/** The children of `masters` that are nginx starting up: executed, not yet titled "nginx: ...". */
async function startingMasters(masters: number[]): Promise<number[]> {
  const starting: number[] = [];
  for (const master of masters) {
    for (const child of await childPids(master)) {
      const command = await commandLine(child);
      if (command !== undefined && !command.startsWith('nginx: ') && (await processState(child)) !== 'Z')
        starting.push(child);
    }
  }
  return starting;
}

export interface OrphanSearch {
  /** The main configuration file the masters of this home run. */
  confPath: string;
  /** How long a master starting up (or a half-done handoff) is waited for. */
  timeoutMs: number;
  log: Logger;
  /** Finishes a handoff the earlier daemon left half done. */
  handoffs: Handoffs;
}

/**
 * A master left running by an earlier daemon on the same home, if there is one. A daemon killed
 * during a handoff can leave two: the old master and the new one it started. The new one is kept
 * once its workers run (the old one goes as after any handoff); otherwise the old one is.
 */
export async function findOrphan({ confPath, timeoutMs, log, handoffs }: OrphanSearch): Promise<number | undefined> {
  // The new master of a handoff the earlier daemon started may still be reading its
  // configuration: until it titles itself it does not look like a master, yet it holds the
  // sockets it opened. Wait until it does (or gives up), so that it is counted.
  const deadline = Date.now() + timeoutMs;
  let masters = await nginxMasters(confPath);
  while (Date.now() < deadline && (await startingMasters(masters.map((master) => master.pid))).length > 0) {
    await sleep(5);
    masters = await nginxMasters(confPath);
  }
  if (masters.length <= 1) return masters[0]?.pid;
  const ids = new Set(masters.map((master) => master.pid));
  const fresh = masters.find((master) => master.parent !== undefined && ids.has(master.parent));
  if (fresh?.parent === undefined) {
    log.warn('several nginx masters run this configuration; adopting the first', { pids: [...ids] });
    return masters[0]?.pid;
  }
  const old = fresh.parent;
  while (isAlive(fresh.pid) && (await childPids(fresh.pid)).length === 0 && Date.now() < deadline) await sleep(5);
  if (isAlive(fresh.pid) && (await childPids(fresh.pid)).length > 0) {
    log.warn('finishing a handoff between nginx masters that an earlier daemon left half done', {
      old,
      new: fresh.pid,
    });
    await handoffs.retire(
      old,
      fresh.pid,
      (await childPids(old)).filter((pid) => pid !== fresh.pid),
    );
    return fresh.pid;
  }
  log.warn('dropping the new nginx master of a handoff an earlier daemon left half done', { old, new: fresh.pid });
  await discardMaster(fresh.pid);
  return old;
}
