// @ts-check
/** The daemon under soak: started in managed mode on a temporary home, stopped and checked. */
import { spawn } from 'node:child_process';
import { open, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { get } from './api.mjs';
import { nginxProcesses } from './host.mjs';
import { sleep } from './util.mjs';

export const ROOT = resolve(import.meta.dirname, '../..');
export const DAEMON = join(ROOT, 'packages/daemon/bin/conductor-daemon.js');

export class Daemon {
  /**
   * @param {import('node:child_process').ChildProcess} child
   * @param {string} home
   * @param {number} start
   * @param {number} end
   * @param {number} apiPort
   * @param {string} logPath
   * @param {number | undefined} inspectPort
   */
  constructor(child, home, start, end, apiPort, logPath, inspectPort) {
    this.child = child;
    this.inspectPort = inspectPort;
    this.home = home;
    this.start = start;
    this.end = end;
    this.apiPort = apiPort;
    this.logPath = logPath;
    /** @type {number | null | undefined} exit code once exited (null: killed by a signal) */
    this.exitCode = undefined;
    /** @type {string | null} */
    this.exitSignal = null;
    /** @type {Promise<void>} */
    this.exited = new Promise((done) =>
      child.once('exit', (code, signal) => {
        this.exitCode = code;
        this.exitSignal = signal;
        done();
      }),
    );
  }

  get pid() {
    return /** @type {number} */ (this.child.pid);
  }

  get alive() {
    return this.exitCode === undefined;
  }
}

/**
 * @param {string} home
 * @param {number} start
 * @param {number} size
 * @param {boolean} inspect run the daemon under --inspect on the port after the API's
 */
export async function startDaemon(home, start, size, inspect) {
  const apiPort = start + size;
  const inspectPort = inspect ? start + size + 1 : undefined;
  const logPath = join(home, 'daemon.log');
  const log = await open(logPath, 'a');
  const env = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CONDUCTOR_HOME: home,
    PORT_RANGE: `${start}-${start + size - 1}`,
    BIND_ADDRESS: '127.0.0.1',
    BIND_PORT: String(apiPort),
    CONDUCTOR_LISTEN_ADDRESS: '127.0.0.1',
  };
  const nodeArgs = inspectPort === undefined ? [] : [`--inspect=127.0.0.1:${inspectPort}`];
  const child = spawn(process.execPath, [...nodeArgs, DAEMON], { env, stdio: ['ignore', log.fd, log.fd] });
  await log.close(); // the child has its own copy of the descriptor
  const daemon = new Daemon(child, home, start, start + size - 1, apiPort, logPath, inspectPort);
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (!daemon.alive)
      throw new Error(
        `the daemon exited during start-up (code ${daemon.exitCode}):\n${await readFile(logPath, 'utf8').catch(() => '')}`,
      );
    const answer = await get(undefined, daemon.apiPort, '/status', 2000);
    if (answer.status === 200) return daemon;
    await sleep(100);
  }
  throw new Error(`the daemon did not answer /status within 60 s:\n${await readFile(logPath, 'utf8').catch(() => '')}`);
}

/**
 * SIGTERM, then (after 30 s) SIGKILL; nginx processes of this home that survive are killed too.
 * Returns what happened, for the report.
 * @param {Daemon} daemon
 */
export async function stopDaemon(daemon) {
  const notes = [];
  let clean = true;
  if (daemon.alive) {
    daemon.child.kill('SIGTERM');
    const started = Date.now();
    await Promise.race([daemon.exited, sleep(30_000)]);
    if (daemon.alive) {
      clean = false;
      notes.push('the daemon did not exit within 30 s of SIGTERM; sent SIGKILL');
      daemon.child.kill('SIGKILL');
      await Promise.race([daemon.exited, sleep(5000)]);
    } else {
      notes.push(
        `the daemon exited ${Date.now() - started} ms after SIGTERM with code ${daemon.exitCode}${daemon.exitSignal ? ` (signal ${daemon.exitSignal})` : ''}`,
      );
      if (daemon.exitCode !== 0) clean = false;
    }
  } else {
    clean = false;
    notes.push(`the daemon had already exited (code ${daemon.exitCode}, signal ${daemon.exitSignal})`);
  }
  // nginx must be gone with it (managed mode stops its nginx on SIGTERM).
  let left = await nginxProcesses(daemon.home);
  for (let waited = 0; waited < 5000 && left.masters.length + left.workers.length > 0; waited += 100) {
    await sleep(100);
    left = await nginxProcesses(daemon.home);
  }
  const pids = [...left.masters, ...left.workers];
  if (pids.length > 0) {
    clean = false;
    notes.push(
      `nginx processes of this home were still running after the daemon stopped (pids ${pids.join(', ')}); killed them`,
    );
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
  return { clean, notes };
}
