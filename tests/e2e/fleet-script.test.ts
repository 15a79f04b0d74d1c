/**
 * The README's fleet on one machine, run as a newcomer would: `scripts/fleet-on-one-machine.sh
 * start` brings up three etcd members and three daemons; the CLI, pointed at one of them with
 * the token file's token, creates a stream that forwards on all three listen addresses; `stop`
 * leaves nothing running and no port open.
 */

import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { runCli } from '../helpers/cli.js';
import { ROOT } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { connectOutcome, EchoBackend, roundTrip } from '../helpers/net.js';
import { freePortBlock } from '../helpers/ports.js';
import { eventually } from '../helpers/wait.js';

const run = promisify(execFile);
const SCRIPT = join(ROOT, 'scripts/fleet-on-one-machine.sh');

const daemons = daemonFixture();
let dir: string;
let base: number;
let rangeStart: number;
let echo: EchoBackend;

beforeAll(async () => {
  dir = await daemons.dir();
  base = await freePortBlock(24);
  rangeStart = await freePortBlock(10);
  echo = await EchoBackend.start('echo');
});

afterAll(async () => {
  await run('bash', [SCRIPT, 'stop', dir]).catch(() => undefined);
  await echo?.close();
});

const env = (): Record<string, string> => ({
  ...(process.env as Record<string, string>),
  FLEET_BASE: String(base),
  PORT_RANGE: `${rangeStart}-${rangeStart + 9}`,
});

describe('a fleet on one machine', () => {
  it('starts from the script, serves one stream on all three hosts, and stops clean', async () => {
    const started = await run('bash', [SCRIPT, 'start', dir], { env: env(), timeout: 90_000 });
    expect(started.stdout).toMatch(new RegExp(`^fleet up: etcd on 127\\.0\\.0\\.1:${base + 1},`, 'm'));
    // A second start over a running fleet is refused, and leaves it running.
    const again = await run('bash', [SCRIPT, 'start', dir], { env: env(), timeout: 30_000 }).catch(
      (error: { code: number; stderr: string }) => error,
    );
    expect(again).toMatchObject({ code: 1, stderr: expect.stringMatching(/a fleet already runs in/) });
    const token = (await readFile(join(dir, 'tokens'), 'utf8')).trim();
    const cli = { CONDUCTOR_URL: `http://127.0.0.1:${base + 21}`, CONDUCTOR_TOKEN: token };

    const anonymous = await runCli(['ls'], { CONDUCTOR_URL: cli.CONDUCTOR_URL });
    expect(anonymous.code).toBe(1);
    expect(anonymous.stderr).toMatch(/token/i); // the token is needed
    const created = await runCli(['create', String(rangeStart), `127.0.0.1:${echo.port}`], cli);
    expect(created.stderr).toBe('');
    expect(created.code).toBe(0);
    for (const host of ['127.0.0.2', '127.0.0.3', '127.0.0.4'])
      await eventually(
        () => roundTrip(rangeStart, 'x', { host }),
        (answer) => answer === 'echo:x',
      );
    const listed = await eventually(
      () => runCli(['ls', '--no-color'], { ...cli, CONDUCTOR_URL: `http://127.0.0.1:${base + 23}` }),
      (ls) => / 3\/3 /.test(ls.stdout),
    );
    expect(listed.stdout).toMatch(
      new RegExp(`│ ${rangeStart} +│ tcp +│ 127\\.0\\.0\\.1:${echo.port} +│ live +│ 3/3 +│`),
    );

    await run('bash', [SCRIPT, 'stop', dir], { env: env(), timeout: 60_000 });
    for (const host of ['127.0.0.2', '127.0.0.3', '127.0.0.4'])
      expect(await connectOutcome(rangeStart, host)).toBe('refused');
    for (const port of [base + 1, base + 21, base + 22, base + 23]) expect(await connectOutcome(port)).toBe('refused');
  });
});
