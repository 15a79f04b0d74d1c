/**
 * The CLI's scripting commands against a real daemon: `diff -f` shows what an apply would change
 * field by field and says by its exit code whether anything would (0 nothing, 1 changes, 2 an
 * error), changing nothing itself; `wait --for live|healthy|gone` returns once it holds, or fails
 * at its timeout with what it saw.
 */

import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { runCli } from '../helpers/cli.js';
import type { Daemon } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { EchoBackend } from '../helpers/net.js';
import { freePortBlock } from '../helpers/ports.js';
import { snapshot } from '../helpers/state.js';

let daemon: Daemon;
let echo: EchoBackend;
let env: Record<string, string>;

const daemons = daemonFixture();

beforeAll(async () => {
  echo = await EchoBackend.start('echo');
  daemon = await daemons.start({ rangeSize: 10 });
  env = { CONDUCTOR_URL: daemon.url };
});

afterAll(async () => {
  await echo?.close();
});

describe('conductor diff', () => {
  it('shows each change an apply would make, exits 1, and changes nothing; 0 once applied', async () => {
    const [a, b, c] = [daemon.rangeStart, daemon.rangeStart + 1, daemon.rangeStart + 2];
    const backend = `127.0.0.1:${echo.port}`;
    for (const port of [a, b])
      expect((await daemon.request('POST', '/v1/streams', { port, backend, labels: { env: 'dev' } })).status).toBe(201);
    const file = join(daemon.home, 'streams.yaml');
    await writeFile(
      file,
      [
        'streams:',
        `  - { port: ${a}, backend: "${backend}", labels: { env: dev } }`,
        `  - { port: ${b}, backend: "${backend}", labels: { env: prod }, maxConnections: 10 }`,
        `  - { port: ${c}, backend: "${backend}", protocol: udp }`,
        '',
      ].join('\n'),
    );
    const before = await snapshot(daemon);
    const diff = await runCli(['diff', '-f', file, '--no-color'], env);
    expect(diff.code).toBe(1);
    expect(diff.stdout).toBe(
      [`~ ${b}`, '    maxConnections: - -> 10', '    labels: env=dev -> env=prod', `+ ${c} udp -> ${backend}`, ''].join(
        '\n',
      ),
    );
    expect(diff.stderr).toBe('2 change(s): 1 to create, 1 to update, 0 to delete\n');
    const pruned = await runCli(['diff', '-f', file, '--prune', '--json'], env);
    expect(pruned.code).toBe(1);
    expect(JSON.parse(pruned.stdout).plan).toEqual({ create: [c], update: [b], delete: [], unchanged: [a] });
    expect(await snapshot(daemon)).toEqual(before);

    expect((await runCli(['apply', '-f', file], env)).code).toBe(0);
    const same = await runCli(['diff', '-f', file], env);
    expect([same.code, same.stdout, same.stderr]).toEqual([0, '', 'no changes\n']);
    for (const port of [a, b, c]) expect((await daemon.request('DELETE', `/v1/streams/${port}`)).status).toBe(200);
  });

  it('exits 2 for a file it cannot read, a bad stream, or a daemon it cannot reach', async () => {
    const bad = join(daemon.home, 'bad.yaml');
    await writeFile(bad, `streams:\n  - { port: ${daemon.rangeStart}, backend: "no port here" }\n`);
    const refused = await runCli(['diff', '-f', bad], env);
    expect([refused.code, refused.stdout]).toEqual([2, '']);
    expect(refused.stderr).toMatch(/backend/);
    expect((await runCli(['diff', '-f', join(daemon.home, 'missing.yaml')], env)).code).toBe(2);
    const unreachable = await runCli(['diff', '-f', bad], {
      CONDUCTOR_URL: `http://127.0.0.1:${await freePortBlock(1)}`,
    });
    expect(unreachable.code).toBe(2);
    expect(unreachable.stderr).toMatch(/daemon not reachable/);
  });
});

describe('conductor wait', () => {
  it('returns once a stream is live, healthy, or gone', async () => {
    const port = daemon.rangeStart + 5;
    const create = runCli(['create', String(port), `127.0.0.1:${echo.port}`], env);
    const live = await runCli(['wait', String(port), '--for', 'live', '--timeout', '20s'], env);
    expect(live).toMatchObject({ code: 0, stdout: `${port} live\n` });
    expect((await create).code).toBe(0);
    const healthy = await runCli(['wait', String(port), '--for', 'healthy', '--timeout', '20s'], env);
    expect(healthy).toMatchObject({ code: 0, stdout: `${port} healthy\n` });
    expect((await runCli(['rm', String(port)], env)).code).toBe(0);
    const gone = await runCli(['wait', String(port), '--for', 'gone', '--timeout', '5s', '--json'], env);
    expect(gone.code).toBe(0);
    expect(JSON.parse(gone.stdout)).toEqual({ port, gone: true });
  });

  it('fails at the timeout saying what it saw, and refuses a condition it does not know', async () => {
    const port = daemon.rangeStart + 6;
    const dead = await freePortBlock(1); // nothing listens there
    expect((await runCli(['create', String(port), `127.0.0.1:${dead}`], env)).code).toBe(0);
    const unhealthy = await runCli(['wait', String(port), '--for', 'healthy', '--timeout', '1s'], env);
    expect(unhealthy.code).toBe(1);
    expect(unhealthy.stderr).toMatch(
      new RegExp(
        `^conductor: port ${port} is not healthy after 1s: live; backends not up: 127\\.0\\.0\\.1:${dead} ECONNREFUSED`,
      ),
    );
    const never = await runCli(['wait', String(daemon.rangeStart + 7), '--for', 'live', '--timeout', '500ms'], env);
    expect(never.code).toBe(1);
    expect(never.stderr).toMatch(/is not live after 500ms: no stream/);
    const udp = daemon.rangeStart + 8;
    expect((await runCli(['create', String(udp), `127.0.0.1:${echo.port}`, '--udp'], env)).code).toBe(0);
    const udpHealthy = await runCli(['wait', String(udp), '--for', 'healthy'], env);
    expect(udpHealthy.code).toBe(2);
    expect(udpHealthy.stderr).toMatch(new RegExp(`stream ${udp} is UDP: its backends cannot be probed`));
    expect((await daemon.request('DELETE', `/v1/streams/${udp}`)).status).toBe(200);
    const gone = await runCli(['wait', String(port), '--for', 'live', '--timeout', '1s'], {
      CONDUCTOR_URL: `http://127.0.0.1:${await freePortBlock(1)}`,
    });
    expect(gone.code).toBe(3); // asked again until the timeout, then the daemon's own error
    expect(gone.stderr).toMatch(/daemon not reachable/);
    const unknown = await runCli(['wait', String(port), '--for', 'ready'], env);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/--for: live, healthy or gone, got "ready"/);
    expect((await runCli(['wait', String(port), '--for', 'live', '--timeout', 'soon'], env)).code).toBe(2);
    expect((await daemon.request('DELETE', `/v1/streams/${port}`)).status).toBe(200);
  });
});
