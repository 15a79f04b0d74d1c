// @ts-check
/**
 * Gives this jest run an id. Test folders carry it in their names (see helpers/daemon.ts), so the
 * global teardown kills only what this run left behind, never another run's processes.
 */
import { randomBytes } from 'node:crypto';

export default function globalSetup() {
  process.env.SC_TEST_RUN = randomBytes(4).toString('hex');
}
