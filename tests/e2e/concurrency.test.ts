/**
 * Many clients at once: requests that arrive while a reload is in flight share the next one, and
 * each still gets its own, right answer.
 */

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { StreamView } from '@stream-conductor/shared';
import type { Daemon } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { connectOutcome, EchoBackend, listeningPorts, roundTrip } from '../helpers/net.js';
import { renderedPorts } from '../helpers/state.js';

let daemon: Daemon;
let backend: EchoBackend;
const COUNT = 100;

const daemons = daemonFixture();

beforeAll(async () => {
  backend = await EchoBackend.start('b');
  daemon = await daemons.start({ rangeSize: COUNT + 10 });
});

afterAll(async () => {
  await backend?.close();
});

const ports = (): number[] => Array.from({ length: COUNT }, (_, i) => daemon.rangeStart + i);

async function agree(expected: number[]): Promise<void> {
  const listed = ((await daemon.get('/getstreams')).json as Array<{ listen: number }>)
    .map((s) => s.listen)
    .sort((a, b) => a - b);
  expect(listed).toEqual(expected);
  expect(await renderedPorts(join(daemon.home, 'stream.d'))).toEqual(expected);
  const stored = JSON.parse(await readFile(join(daemon.home, 'streams.json'), 'utf8')) as {
    streams: Array<{ port: number }>;
  };
  expect(stored.streams.map((s) => s.port)).toEqual(expected);
  const listening = await listeningPorts();
  expect(ports().filter((port) => listening.has(port))).toEqual(expected);
}

describe('100 concurrent creates, then 100 concurrent removes', () => {
  it('answers each one right, batches the reloads, and leaves state and nginx agreeing', async () => {
    const created = await Promise.all(
      ports().map((port) => daemon.get(`/createstream/${port}/127.0.0.1:${backend.port}`)),
    );
    for (const answer of created) expect(answer.json).toEqual({ result: 'ok', errors: '' });
    await agree(ports());
    const answers = await Promise.all(ports().map((port) => roundTrip(port, `p${port}`)));
    expect(answers).toEqual(ports().map((port) => `b:p${port}`));

    const applies = daemon.logs.split('\n').filter((line) => line.includes('"msg":"apply"'));
    expect(applies.length).toBeLessThan(COUNT / 2); // many requests shared each reload

    const removed = await Promise.all(ports().map((port) => daemon.get(`/removestream/${port}`)));
    for (const answer of removed) expect(answer.json).toEqual({ result: 'ok', errors: '' });
    await agree([]);
    const outcomes = await Promise.all(ports().map((port) => connectOutcome(port)));
    expect(outcomes.every((outcome) => outcome === 'refused')).toBe(true);
  });

  it('keeps the good requests of a batch when one of them is bad', async () => {
    const good = ports().slice(0, 20);
    const bad = daemon.rangeStart + 20;
    const answers = await Promise.all([
      ...good.map((port) => daemon.get(`/createstream/${port}/127.0.0.1:${backend.port}`)),
      daemon.get(`/createstream/${bad}/nothing-here.invalid:22`),
    ]);
    for (const answer of answers.slice(0, good.length)) expect(answer.json).toEqual({ result: 'ok', errors: '' });
    expect(answers[good.length]?.json).toMatchObject({ result: 'error' });
    await agree(good);
    for (const port of good) expect(await roundTrip(port, 'ok')).toBe('b:ok');
    await Promise.all(good.map((port) => daemon.get(`/removestream/${port}`)));
    await agree([]);
  });

  it('lets exactly one of several creates on the same port win', async () => {
    const port = daemon.rangeStart + 50;
    const answers = await Promise.all(
      Array.from({ length: 8 }, () => daemon.get(`/createstream/${port}/127.0.0.1:${backend.port}`)),
    );
    const results = answers.map((answer) => (answer.json as { result: string }).result);
    expect(results.filter((result) => result === 'ok')).toHaveLength(1);
    expect(results.filter((result) => result === 'error')).toHaveLength(7);
    for (const answer of answers) {
      if ((answer.json as { result: string }).result === 'error') {
        expect((answer.json as { errors: string }).errors).toMatch(new RegExp(`^port ${port} already has a stream`));
      }
    }
    await agree([port]);
    await daemon.get(`/removestream/${port}`);
  });

  it('applies a create queued behind a remove of the same port after it', async () => {
    const port = daemon.rangeStart + 60;
    await daemon.get(`/createstream/${port}/127.0.0.1:${backend.port}`);
    const other = await EchoBackend.start('other');
    try {
      const removing = daemon.get(`/removestream/${port}`);
      await new Promise((done) => setTimeout(done, 20)); // the remove's reload is in flight now
      const [removed, created] = await Promise.all([
        removing,
        daemon.get(`/createstream/${port}/127.0.0.1:${other.port}`),
      ]);
      expect(removed.json).toEqual({ result: 'ok', errors: '' });
      expect(created.json).toEqual({ result: 'ok', errors: '' });
      expect(await roundTrip(port, 'new')).toBe('other:new');
      await daemon.get(`/removestream/${port}`);
    } finally {
      await other.close();
    }
  });
});

describe('renewals of one stream asked at once', () => {
  /** `count` lifetimes, a minute apart, from two hours on (whole seconds, as the API gives them back). */
  const expiries = (count: number): string[] => {
    const from = Math.floor(Date.now() / 1000) * 1000 + 2 * 3_600_000;
    return Array.from({ length: count }, (_, i) => new Date(from + i * 60_000).toISOString());
  };
  const renew = (port: number, expiresAt: string) => daemon.request('POST', `/v1/streams/${port}/renew`, { expiresAt });
  const streamOn = async (port: number): Promise<StreamView> =>
    ((await daemon.get(`/v1/streams/${port}`)).json as { stream: StreamView }).stream;

  it('are each taken and answered with the lifetime they asked for; a replace asked with them is kept', async () => {
    const port = daemon.rangeStart + COUNT + 1;
    const body = { port, backend: `127.0.0.1:${backend.port}`, ttl: '1h' };
    expect((await daemon.request('POST', '/v1/streams', body)).status).toBe(201);
    const asked = expiries(12);
    const answers = await Promise.all(asked.map((expiresAt) => renew(port, expiresAt)));
    // The bodies ride along, so that a failure shows what was said.
    expect(answers.map((answer) => [answer.status, answer.json])).toEqual(
      asked.map((expiresAt) => [200, expect.objectContaining({ stream: expect.objectContaining({ expiresAt }) })]),
    );
    expect(asked).toContain((await streamOn(port)).expiresAt);

    // A replace among renewals: its backend stays, whichever lifetime was given last.
    const other = await EchoBackend.start('c');
    try {
      const more = expiries(7).slice(1);
      const [replaced, ...renewed] = await Promise.all([
        daemon.request('PUT', `/v1/streams/${port}`, { backend: `127.0.0.1:${other.port}`, ttl: '1h' }),
        ...more.map((expiresAt) => renew(port, expiresAt)),
      ]);
      expect([replaced?.status, ...renewed.map((answer) => answer.status)]).toEqual(more.concat('').map(() => 200));
      const now = await streamOn(port);
      expect(now.backends).toEqual([{ address: `127.0.0.1:${other.port}` }]);
      expect(await roundTrip(port, 'x')).toBe('c:x');
    } finally {
      await other.close();
    }
    expect((await daemon.request('DELETE', `/v1/streams/${port}`)).status).toBe(200);
  });
});
