/**
 * The daemon killed with SIGKILL at random moments during a burst of concurrent creates and
 * removes, then restarted on the same home, round after round. After every restart: each change
 * that was answered as done is live, each change answered as refused is absent, the one change per
 * port that was in flight is either, nginx's configuration is valid, no temporary file is left, and
 * the daemon's list, the files, the store and the kernel's listening sockets agree.
 */

import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type Daemon, instanceCount } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { EchoBackend, listeningPorts, roundTrip } from '../helpers/net.js';
import { freePortBlock } from '../helpers/ports.js';
import { folderContents, renderedPorts } from '../helpers/state.js';
import { sleep } from '../helpers/wait.js';

const ROUNDS = 20;
const CLIENTS = 8;
const PORTS_PER_CLIENT = 5;
const RANGE = CLIENTS * PORTS_PER_CLIENT;

/** What a port should be after a restart: live, absent, or either (a change was in flight). */
type Expectation = 'live' | 'absent' | 'either';

let backend: EchoBackend;
let dir: string;
const daemons = daemonFixture();

beforeAll(async () => {
  backend = await EchoBackend.start('b');
  dir = await daemons.dir();
});

afterAll(async () => {
  await backend?.close();
});

async function views(
  daemon: Daemon,
): Promise<{ listed: number[]; files: number[]; stored: number[]; listening: number[] }> {
  const inRange = (port: number): boolean => port >= daemon.rangeStart && port <= daemon.rangeEnd;
  const sorted = (ports: number[]): number[] => [...ports].sort((a, b) => a - b);
  const listed = ((await daemon.get('/getstreams')).json as Array<{ listen: number }>).map((stream) => stream.listen);
  const files = await renderedPorts(join(daemon.home, 'stream.d'));
  const store = JSON.parse(await readFile(join(daemon.home, 'streams.json'), 'utf8').catch(() => '{"streams":[]}')) as {
    streams: Array<{ port: number }>;
  };
  const listening = [...(await listeningPorts())].filter(inRange);
  return {
    listed: sorted(listed),
    files: sorted(files),
    stored: sorted(store.streams.map((s) => s.port)),
    listening: sorted(listening),
  };
}

/** One client: a loop of creates and removes on its own ports, until the daemon goes away. */
async function client(
  daemon: Daemon,
  ports: number[],
  model: Map<number, Expectation>,
  stop: { done: boolean },
  log: string[],
): Promise<'interrupted' | 'idle'> {
  for (let i = 0; i < 200 && !stop.done; i += 1) {
    const port = ports[Math.floor(Math.random() * ports.length)] as number;
    const current = model.get(port) ?? 'absent';
    const create = current === 'absent' ? true : current === 'live' ? false : Math.random() < 0.5;
    const path = create ? `/createstream/${port}/127.0.0.1:${backend.port}` : `/removestream/${port}`;
    model.set(port, 'either');
    let answer: { result?: string };
    try {
      answer = (await daemon.get(path)).json as { result?: string };
    } catch {
      return 'interrupted'; // the daemon was killed with this change in flight: it stays "either"
    }
    if (answer.result === 'ok') model.set(port, create ? 'live' : 'absent');
    else model.set(port, current); // refused: nothing changed
    log.push(`${path} -> ${JSON.stringify(answer)}`);
  }
  return 'idle';
}

describe(`${ROUNDS} rounds of SIGKILL during a burst`, () => {
  it('never loses an acknowledged change nor keeps a refused one, and leaves no debris', async () => {
    const base = await freePortBlock(RANGE + 1);
    const home = join(dir, 'home');
    const options = { home, rangeStart: base, rangeSize: RANGE, apiPort: base + RANGE };
    const model = new Map<number, Expectation>();
    let daemon = await daemons.start(options);
    let interrupted = 0;
    try {
      for (let round = 0; round < ROUNDS; round += 1) {
        const stop = { done: false };
        const log: string[] = [];
        const clients = Array.from({ length: CLIENTS }, (_, c) => {
          const ports = Array.from({ length: PORTS_PER_CLIENT }, (_, i) => base + c * PORTS_PER_CLIENT + i);
          return client(daemon, ports, model, stop, log);
        });
        await sleep(30 + Math.random() * 500);
        await daemon.stop('SIGKILL');
        stop.done = true;
        interrupted += (await Promise.all(clients)).filter((outcome) => outcome === 'interrupted').length;

        daemon = await daemons.start(options);
        const seen = await views(daemon);
        const context = `round ${round}\nmodel ${JSON.stringify([...model])}\nviews ${JSON.stringify(seen)}\n${log.slice(-20).join('\n')}`;
        expect({ round, files: seen.files, stored: seen.stored, listening: seen.listening }).toEqual({
          round,
          files: seen.listed,
          stored: seen.listed,
          listening: seen.listed,
        });
        for (const [port, expected] of model) {
          const present = seen.listed.includes(port);
          if (expected === 'live' && !present) throw new Error(`acknowledged create of ${port} lost\n${context}`);
          if (expected === 'absent' && present) throw new Error(`refused or removed ${port} is present\n${context}`);
          model.set(port, present ? 'live' : 'absent');
        }
        for (const port of seen.listed) expect(await roundTrip(port, `r${round}`)).toBe(`b:r${round}`);
        const everything = [...Object.keys(await folderContents(home))];
        expect(everything.filter((path) => /(^|\/)\.tmp-/.test(path))).toEqual([]);
        for (let id = 0; id < instanceCount(daemon); id += 1) {
          const dir = join(home, 'nginx', String(id));
          await promisify(execFile)('nginx', [
            '-t',
            '-q',
            '-c',
            join(dir, 'nginx.conf'),
            '-p',
            `${dir}/`,
            '-e',
            'stderr',
          ]);
        }
      }
    } finally {
      await daemon.stop();
    }
    // The kills did land in the middle of changes, not only between them.
    expect(interrupted).toBeGreaterThan(ROUNDS);
  });
});
