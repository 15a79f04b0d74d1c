/**
 * Safety net after the whole run: any daemon or nginx process still running from a test home
 * (a folder named sc-test-*) is killed, so a failed test never leaves ports held behind it.
 */
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';

function ours(pid) {
  try {
    if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('sc-test-')) return true;
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`).includes('/sc-test-')) return true;
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    // gone meanwhile
  }
  return false;
}

export default function globalTeardown() {
  const leftovers = readdirSync('/proc').filter((entry) => /^[0-9]+$/.test(entry) && Number(entry) !== process.pid && ours(entry));
  for (const pid of leftovers) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // already gone
    }
  }
  if (leftovers.length > 0) process.stderr.write(`global teardown: killed ${leftovers.length} leftover test process(es)\n`);
}
