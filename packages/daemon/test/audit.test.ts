/**
 * The audit against real processes and the real kernel: a child process stands in for the master
 * (it listens on the ports it "serves"), another for a stray that holds a port it should not.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from '@jest/globals';
import { NginxAuditor } from '../src/nginx/pipeline/audit.js';

const children: ChildProcess[] = [];

afterEach(() => {
  for (const child of children.splice(0))
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

/** A process listening on loopback, one TCP port per entry; resolves once it listens, with its ports. */
async function listener(
  count: number,
  ignoreQuit = false,
): Promise<{ pid: number; ports: number[]; child: ChildProcess }> {
  const script = `
    ${ignoreQuit ? "process.on('SIGQUIT', () => {});" : ''}
    const net = require('node:net');
    const ports = [];
    let left = ${count};
    for (let i = 0; i < ${count}; i += 1) {
      const server = net.createServer();
      server.listen(0, '127.0.0.1', () => {
        ports.push(server.address().port);
        if (--left === 0) process.stdout.write(JSON.stringify(ports) + '\\n');
      });
    }
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  const [chunk] = (await once(child.stdout as NodeJS.ReadableStream, 'data')) as [Buffer];
  return { pid: child.pid as number, ports: JSON.parse(chunk.toString()) as number[], child };
}

describe('NginxAuditor', () => {
  it('finds the master in line when it holds exactly the listed ports', async () => {
    const master = await listener(2);
    const auditor = new NginxAuditor({
      processes: async () => ({ master: master.pid, workers: 1, others: [] }),
      expected: () => new Set(master.ports.map((port) => `tcp:${port}`)),
    });
    const found = await auditor.run();
    expect(found?.audit).toMatchObject({ inLine: true, missing: [], extra: [], strays: 0, straysEnded: 0 });
  });

  it('names the ports the master lacks and the ports it serves that no stream has', async () => {
    const master = await listener(2);
    const [served, unlisted] = master.ports as [number, number];
    const lacking = 9; // a port nothing of the master holds
    const auditor = new NginxAuditor({
      processes: async () => ({ master: master.pid, workers: 1, others: [] }),
      expected: () => new Set([`tcp:${served}`, `tcp:${lacking}`]),
    });
    const found = await auditor.run();
    expect(found?.audit).toMatchObject({ inLine: false, missing: [lacking], extra: [unlisted], strays: 0 });
  });

  it('tells a stray holding a port to quit, and kills it at the next audit if it did not', async () => {
    const master = await listener(1);
    const stray = await listener(1, true); // ignores SIGQUIT, as a stopped or stuck worker would
    const auditor = new NginxAuditor({
      processes: async () => ({ master: master.pid, workers: 1, others: [stray.pid] }),
      expected: () => new Set(master.ports.map((port) => `tcp:${port}`)),
    });
    const first = await auditor.run();
    expect(first?.audit).toMatchObject({ inLine: false, strays: 1, straysEnded: 1, missing: [], extra: [] });
    expect(first?.signalled).toEqual([{ pid: stray.pid, signal: 'SIGQUIT', ports: stray.ports }]);
    const second = await auditor.run();
    expect(second?.signalled).toEqual([{ pid: stray.pid, signal: 'SIGKILL', ports: stray.ports }]);
    const [, signal] = (await once(stray.child, 'exit')) as [number | null, NodeJS.Signals | null];
    expect(signal).toBe('SIGKILL');
    const third = await auditor.run();
    expect(third?.audit).toMatchObject({ inLine: true, strays: 0, straysEnded: 1 });
  });

  it('finds a master without workers out of line while it has streams to serve, and in line without any', async () => {
    const master = await listener(1);
    let expected = new Set(master.ports.map((port) => `tcp:${port}`));
    const auditor = new NginxAuditor({
      processes: async () => ({ master: master.pid, workers: 0, others: [] }),
      expected: () => expected,
    });
    expect((await auditor.run())?.audit).toMatchObject({
      inLine: false,
      workers: 0,
      missing: [],
      extra: [],
      strays: 0,
    });
    expected = new Set();
    const idle = new NginxAuditor({
      processes: async () => ({ master: process.pid, workers: 0, others: [] }),
      expected: () => expected,
    });
    expect((await idle.run())?.audit).toMatchObject({ workers: 0, missing: [] });
  });

  it('says nothing when no master runs', async () => {
    const auditor = new NginxAuditor({ processes: async () => undefined, expected: () => new Set() });
    expect(await auditor.run()).toBeUndefined();
  });
});
