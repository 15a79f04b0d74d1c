// @ts-check
/**
 * Safety net after the whole run: any daemon or nginx process still running from a test home (a
 * folder named sc-test-<this run's id>-*) is killed, so a failed test never leaves ports held behind it.
 */
import { killProcessesUsing } from './helpers/processes.js';

export default function globalTeardown() {
  const run = process.env.SC_TEST_RUN;
  if (run === undefined) return;
  const killed = killProcessesUsing(`/sc-test-${run}-`);
  if (killed > 0) process.stderr.write(`global teardown: killed ${killed} leftover test process(es)\n`);
}
