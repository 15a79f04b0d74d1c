/** The small parts of the managed supervisor: when the reaper may be used, error-log trimming, the watchdog. */

import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { silentLogger } from '../src/log.js';
import { trimErrorLog } from '../src/nginx/process/error-log.js';
import { failsReloadToo } from '../src/nginx/process/handoff.js';
import { reaperCommand, reaperUnsupported } from '../src/nginx/process/reaper.js';
import { Watchdog } from '../src/nginx/process/watchdog.js';
import { isAlive, processState } from '../src/sys/processes.js';

const sleep = (ms: number): Promise<void> => new Promise((done) => setTimeout(done, ms));

describe('reaper', () => {
  it('needs an absolute nginx path (nginx starts its new master from it, without a PATH search)', () => {
    expect(reaperUnsupported('nginx')).toMatch(/not an absolute path/);
    expect(reaperUnsupported('/usr/sbin/nginx')).toBeUndefined(); // the test machines are x64 or arm64
  });

  it('runs perl with the script, the prctl number, then nginx and its arguments', () => {
    const { bin, args } = reaperCommand('/usr/sbin/nginx', ['-c', '/x/nginx.conf']);
    expect(bin).toBe('perl');
    expect(args[0]).toBe('-e');
    expect(args.slice(2)).toEqual([expect.stringMatching(/^[0-9]+$/), '/usr/sbin/nginx', '-c', '/x/nginx.conf']);
  });
});

describe('failsReloadToo', () => {
  it.each([
    ['a line of the configuration', 'host not found in upstream "x" in /a/b.conf:5', true],
    ['a bind', 'bind() to 0.0.0.0:80 failed (98: Address already in use)', true],
    ['a pid file on a full disk', 'open() "/a/nginx.pid" failed (28: No space left on device)', false],
  ])('%s', (_what, message, expected) => {
    expect(failsReloadToo({ ok: false, code: 'RELOAD_FAILED', message, lines: [] })).toBe(expected);
  });
});

describe('trimErrorLog', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sc-errlog-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('copies a log past the limit aside and empties it in place; leaves a small one alone', async () => {
    const path = join(dir, 'error.log');
    await writeFile(path, 'x'.repeat(100));
    await trimErrorLog(path, 200, silentLogger);
    expect((await stat(path)).size).toBe(100);
    await trimErrorLog(path, 50, silentLogger);
    expect((await stat(path)).size).toBe(0);
    expect(await readFile(`${path}.1`, 'utf8')).toBe('x'.repeat(100));
  });

  it('does nothing without a limit, or without a log', async () => {
    await expect(trimErrorLog(join(dir, 'none.log'), undefined, silentLogger)).resolves.toBeUndefined();
    await expect(trimErrorLog(join(dir, 'none.log'), 10, silentLogger)).resolves.toBeUndefined();
  });
});

describe('Watchdog', () => {
  let child: ChildProcess;
  let lost: string[];
  let incidents: string[];
  let watchdog: Watchdog;

  beforeEach(() => {
    child = spawn('sleep', ['30'], { stdio: 'ignore' });
    lost = [];
    incidents = [];
    watchdog = new Watchdog({
      pid: () => child.pid,
      stopping: () => false,
      isChild: () => false, // seen as adopted: its death is the watchdog's to report
      hasChild: () => false,
      lost: (message) => lost.push(message),
      incident: (message) => incidents.push(message),
      log: silentLogger,
    });
  });
  afterEach(() => {
    watchdog.stop();
    child.kill('SIGKILL');
  });

  it('resumes a stopped master', async () => {
    child.kill('SIGSTOP');
    watchdog.start(100);
    for (let waited = 0; waited < 2000 && incidents.length === 0; waited += 10) await sleep(10);
    expect(incidents).toEqual([`nginx master ${child.pid} was found stopped (SIGSTOP); sent SIGCONT`]);
    for (let waited = 0; waited < 2000 && (await processState(child.pid ?? 0)) === 'T'; waited += 10) await sleep(10);
    // Resumed: sleeping, or running for a moment after SIGCONT (seen under load), not stopped.
    expect(['S', 'R']).toContain(await processState(child.pid ?? 0));
    expect(lost).toEqual([]);
  });

  it('kills a master still stopped at the next round and reports it lost', async () => {
    child.kill('SIGSTOP');
    watchdog.start(100);
    for (let waited = 0; waited < 2000 && incidents.length === 0; waited += 10) await sleep(10);
    child.kill('SIGSTOP'); // stopped again before the next round
    for (let waited = 0; waited < 2000 && lost.length === 0; waited += 10) await sleep(10);
    expect(lost).toEqual(['the nginx master was stopped and had to be killed']);
    expect(incidents[1]).toMatch(/stayed stopped; killed it/);
    for (let waited = 0; waited < 2000 && isAlive(child.pid ?? 0); waited += 10) await sleep(10);
    expect(isAlive(child.pid ?? 0)).toBe(false);
  });

  it('reports an adopted master that is gone', async () => {
    watchdog.start(20);
    child.kill('SIGKILL');
    for (let waited = 0; waited < 2000 && lost.length === 0; waited += 10) await sleep(10);
    expect(lost).toEqual(['the adopted nginx master is gone']);
    expect(isAlive(child.pid ?? 0)).toBe(false);
  });
});
