// @ts-check
/**
 * Finds and kills processes that belong to a test folder (by command line or open file). Plain
 * JavaScript so that jest's global teardown, which runs outside the TypeScript transform, can
 * use it too.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/**
 * @param {string} pid
 * @param {string} marker
 * @returns {boolean}
 */
function uses(pid, marker) {
  try {
    if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(marker)) return true;
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`).includes(marker)) return true;
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    // gone meanwhile
  }
  return false;
}

/**
 * SIGKILLs every process whose command line or open files mention `marker`.
 * @param {string} marker
 * @returns {number} how many were killed
 */
export function killProcessesUsing(marker) {
  const pids = readdirSync('/proc').filter(
    (entry) => /^[0-9]+$/.test(entry) && Number(entry) !== process.pid && uses(entry, marker),
  );
  for (const pid of pids) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // already gone
    }
  }
  return pids.length;
}
