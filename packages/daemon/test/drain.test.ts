/**
 * Draining a stream on the local service: the port leaves nginx at once (a remove through the
 * pipeline) while the record stays, held as draining, in the store and the listing; the drain
 * loop removes it when the kernel shows no session left, or cuts the sessions at the deadline;
 * a drain called off puts the same stream back. nginx, the store and the kernel's sessions are
 * fakes (service-fakes.ts); the real ones are in tests/e2e/drain.test.ts.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { ConductorError, ErrorCode, type PortSpan, type StreamRecord, simpleSpec } from '@stream-conductor/shared';
import type { Conductor } from '../src/service/local.js';
import { FakeInstance, MemoryStore, record, startLocalService } from './service-fakes.js';

const RANGE = { start: 9000, end: 9009 };
const START = Date.parse('2026-12-04T00:00:00.000Z');

let folder: string;
beforeAll(async () => {
  folder = await mkdtemp(join(tmpdir(), 'sc-drain-'));
});
afterAll(async () => {
  await rm(folder, { recursive: true, force: true });
});

/** Sessions per port as the kernel would count them, and the ports whose sessions were cut. */
class FakeSessions {
  readonly open = new Map<number, number>();
  readonly cuts: number[] = [];
  /** A cut fails with this (no CAP_NET_ADMIN, say). */
  cutFails: Error | undefined;
  async count({ port }: PortSpan): Promise<number> {
    return this.open.get(port) ?? 0;
  }
  async cut({ port }: PortSpan): Promise<number> {
    if (this.cutFails) throw this.cutFails;
    const had = this.open.get(port) ?? 0;
    this.cuts.push(port);
    this.open.delete(port);
    return had;
  }
}

const services: Conductor[] = [];
afterEach(async () => {
  for (const service of services.splice(0)) await service.close();
});

async function setup(stored: StreamRecord[] = [record(9000)]) {
  const instance = new FakeInstance(0);
  const store = new MemoryStore(stored);
  const sessions = new FakeSessions();
  const clock = { ms: START };
  const service = await startLocalService({
    instances: [instance],
    store,
    portRange: RANGE,
    legacyFolder: folder,
    sessions,
    now: () => new Date(clock.ms),
    drainIntervalMs: 0, // the tests take each look themselves
  });
  services.push(service);
  return { instance, store, sessions, clock, service };
}

/** Makes the instance's changes wait until the returned function is called (a change in flight). */
function holdSubmits(instance: FakeInstance): () => void {
  const submit = instance.submit.bind(instance);
  let release = (): void => undefined;
  const gate = new Promise<void>((done) => {
    release = done;
  });
  instance.submit = async (mutation) => {
    await gate;
    return submit(mutation);
  };
  return () => release();
}

describe('a drain', () => {
  it('takes the port out of nginx, keeps the stream listed as draining, and holds the port', async () => {
    const { instance, store, sessions, service } = await setup();
    sessions.open.set(9000, 2);
    const { stream: view } = await service.drain(9000, 60_000);
    expect(view).toMatchObject({
      port: 9000,
      state: 'draining',
      drainingUntil: '2026-12-04T00:01:00.000Z',
      openSessions: 2,
    });
    expect(instance.submitted.at(-1)).toEqual({ kind: 'remove', port: 9000 });
    expect(instance.get(9000)).toBeUndefined();
    expect(store.records.get(9000)?.drainingUntil).toBe('2026-12-04T00:01:00.000Z');
    expect(service.list().map((stream) => [stream.port, stream.state])).toEqual([[9000, 'draining']]);
    expect(service.status().streams).toEqual({ total: 1, live: 0, failed: 0, draining: 1 });
    await expect(service.create(simpleSpec(9000, 'b:1'))).rejects.toMatchObject({
      code: ErrorCode.StreamExists,
      message: 'port 9000 is draining until 2026-12-04T00:01:00.000Z: its sessions are ending',
    });
    await expect(service.put(simpleSpec(9000, 'b:1'))).rejects.toMatchObject({ code: ErrorCode.StreamExists });
    await expect(service.renew(9000, undefined)).rejects.toMatchObject({ code: ErrorCode.NotFound });
  });

  it('removes the stream once the kernel shows its last session gone', async () => {
    const { store, sessions, service } = await setup();
    sessions.open.set(9000, 1);
    await service.drain(9000, 60_000);
    await service.lookAtDrains();
    expect(service.get(9000)).toMatchObject({ state: 'draining', openSessions: 1 });
    sessions.open.set(9000, 0);
    await service.lookAtDrains();
    expect(service.get(9000)).toBeUndefined();
    expect(store.records.has(9000)).toBe(false);
    expect(sessions.cuts).toEqual([]);
  });

  it('cuts the sessions left at the deadline and removes the stream', async () => {
    const { store, sessions, clock, service } = await setup();
    sessions.open.set(9000, 3);
    await service.drain(9000, 60_000);
    sessions.open.set(9000, 2);
    clock.ms = START + 59_999;
    await service.lookAtDrains();
    expect(service.get(9000)).toMatchObject({ state: 'draining', openSessions: 2 });
    clock.ms = START + 60_000;
    await service.lookAtDrains();
    expect(service.get(9000)).toBeUndefined();
    expect(sessions.cuts).toEqual([9000]);
    expect(store.records.has(9000)).toBe(false);
  });

  it('sets a new deadline when asked again, and nothing else', async () => {
    const { instance, sessions, service } = await setup();
    sessions.open.set(9000, 1);
    await service.drain(9000, 60_000);
    const submitted = instance.submitted.length;
    expect((await service.drain(9000, 3_600_000)).stream.drainingUntil).toBe('2026-12-04T01:00:00.000Z');
    expect(instance.submitted.length).toBe(submitted);
  });

  it('takes one change to a drain at a time: a second while the first waits for nginx is refused', async () => {
    const { instance, sessions, service } = await setup();
    sessions.open.set(9000, 1); // keeps the drain loop from ending it meanwhile
    const release = holdSubmits(instance);
    const first = service.drain(9000, 60_000);
    await expect(service.drain(9000, 120_000)).rejects.toMatchObject({
      code: ErrorCode.Conflict,
      message: 'a change to the drain of port 9000 is under way',
    });
    await expect(service.undrain(9000)).rejects.toMatchObject({ code: ErrorCode.Conflict });
    release();
    expect((await first).stream.drainingUntil).toBe('2026-12-04T00:01:00.000Z');
    expect((await service.undrain(9000)).stream.state).toBe('live');
  });

  it('comes back from the store as draining after a restart, without reaching nginx', async () => {
    const draining = { ...record(9001), drainingUntil: '2026-12-04T00:05:00.000Z' };
    const { instance, service } = await setup([record(9000), draining]);
    expect(instance.get(9001)).toBeUndefined();
    expect(service.get(9001)).toMatchObject({ state: 'draining', drainingUntil: '2026-12-04T00:05:00.000Z' });
  });
});

describe('the end of a drain', () => {
  it('removes the stream at the deadline even when its sessions cannot be cut', async () => {
    const { store, sessions, clock, service } = await setup();
    sessions.open.set(9000, 2);
    await service.drain(9000, 60_000);
    sessions.cutFails = new Error('ss -K failed: Operation not permitted');
    clock.ms = START + 60_000;
    await service.lookAtDrains();
    expect(service.get(9000)).toBeUndefined();
    expect(store.records.has(9000)).toBe(false);
  });

  it('ends at the expiry at the latest', async () => {
    const expiring = { ...record(9000), expiresAt: '2026-12-04T00:00:30.000Z' };
    const { sessions, service } = await setup([expiring]);
    sessions.open.set(9000, 1);
    expect((await service.drain(9000, 60_000)).stream.drainingUntil).toBe('2026-12-04T00:00:30.000Z');
  });

  it('waits while a change to the same drain is under way, and leaves a drain called off meanwhile alone', async () => {
    const { instance, sessions, clock, service } = await setup();
    sessions.open.set(9000, 1);
    await service.drain(9000, 60_000);
    const release = holdSubmits(instance);
    const cancel = service.undrain(9000);
    clock.ms = START + 60_000; // due, but being called off
    await service.lookAtDrains();
    expect(sessions.cuts).toEqual([]);
    release();
    expect((await cancel).stream.state).toBe('live');
    await service.lookAtDrains();
    expect(sessions.cuts).toEqual([]);
    expect(service.get(9000)?.state).toBe('live');
  });
});

describe('calling a drain off', () => {
  it('puts the same stream back on nginx, without the drain', async () => {
    const { instance, sessions, clock, service } = await setup();
    sessions.open.set(9000, 1);
    await service.drain(9000, 60_000);
    clock.ms = START + 1000;
    const answer = await service.undrain(9000);
    expect(answer.change).toBe('replaced');
    expect(answer.stream).toMatchObject({ port: 9000, state: 'live', backends: [{ address: '10.0.0.1:9000' }] });
    expect(answer.stream).not.toHaveProperty('drainingUntil');
    expect(instance.get(9000)?.record).toMatchObject({ updatedAt: '2026-12-04T00:00:01.000Z' });
    sessions.open.set(9000, 0);
    await service.lookAtDrains(); // the loop leaves a stream that is live again alone
    expect(service.get(9000)?.state).toBe('live');
  });

  it('keeps the stream draining when nginx refuses it back', async () => {
    const { instance, sessions, service } = await setup();
    sessions.open.set(9000, 1);
    await service.drain(9000, 60_000);
    instance.inUse.add(9000);
    await expect(service.undrain(9000)).rejects.toMatchObject({ code: ErrorCode.PortInUse });
    expect(service.get(9000)?.state).toBe('draining');
  });

  it('refuses a stream that is not draining', async () => {
    const { service } = await setup();
    await expect(service.undrain(9000)).rejects.toMatchObject({
      code: ErrorCode.NotFound,
      message: 'stream 9000 is not draining',
    });
    await expect(service.undrain(9005)).rejects.toMatchObject({ code: ErrorCode.NotFound });
  });
});

describe('refusals that change nothing', () => {
  it.each<[string, number, StreamRecord[], ErrorCode]>([
    ['a port without a stream', 9005, [record(9000)], ErrorCode.NotFound],
    [
      'a UDP stream (its sessions cannot be seen)',
      9000,
      [{ ...record(9000), protocol: 'udp' }],
      ErrorCode.InvalidInput,
    ],
  ])('refuses %s', async (_what, port, stored, code) => {
    const { instance, store, service } = await setup(stored);
    const before = [...store.records.values()];
    await expect(service.drain(port, 60_000)).rejects.toMatchObject({ code });
    expect(instance.submitted).toEqual([]);
    expect([...store.records.values()]).toEqual(before);
  });

  it('refuses while another change to the port is in flight', async () => {
    const { instance, service } = await setup();
    const release = holdSubmits(instance);
    const put = service.put(simpleSpec(9000, 'b:1'));
    await expect(service.drain(9000, 60_000)).rejects.toMatchObject({
      code: ErrorCode.Conflict,
      message: 'port 9000 is being changed; drain it once that is done',
    });
    release();
    await put;
    expect(service.get(9000)?.state).toBe('live');
  });

  it('puts the stream back when the store does not take the drain', async () => {
    const { instance, store, sessions, service } = await setup();
    sessions.open.set(9000, 1);
    const commit = store.commit.bind(store);
    store.commit = async (change) => {
      if (change.put.some((put) => put.drainingUntil !== undefined))
        throw new ConductorError(ErrorCode.StorageFailed, 'no space left on device');
      return commit(change);
    };
    await expect(service.drain(9000, 60_000)).rejects.toMatchObject({ code: ErrorCode.StorageFailed });
    expect(instance.get(9000)?.state).toBe('live');
    expect(service.get(9000)?.state).toBe('live');
  });

  it('gives the port back when nginx refuses the remove', async () => {
    const { instance, store, service } = await setup();
    instance.submit = async () => {
      throw new ConductorError(ErrorCode.ReloadFailed, 'nginx did not reload');
    };
    await expect(service.drain(9000, 60_000)).rejects.toMatchObject({ code: ErrorCode.ReloadFailed });
    expect(service.get(9000)?.state).toBe('live');
    expect(store.records.get(9000)).not.toHaveProperty('drainingUntil');
  });
});

describe('a declarative apply beside a drain', () => {
  it('leaves a draining stream the file lists as it is alone, and refuses one the file changes', async () => {
    const { instance, sessions, service } = await setup([record(9000), record(9001)]);
    sessions.open.set(9000, 1);
    await service.drain(9000, 60_000);
    const same = [simpleSpec(9000, '10.0.0.1:9000'), simpleSpec(9001, '10.0.0.1:9001')];
    const applied = await service.apply(same, { prune: true, dryRun: false });
    expect(applied.plan).toEqual({ create: [], update: [], delete: [], unchanged: [9000, 9001] });
    expect(service.get(9000)?.state).toBe('draining');
    await expect(service.apply([simpleSpec(9000, 'b:1')], { prune: false, dryRun: false })).rejects.toMatchObject({
      code: ErrorCode.StreamExists,
      message: expect.stringMatching(/^port 9000 is draining/),
    });
    expect(instance.get(9000)).toBeUndefined();
  });
});

describe('removing a draining stream', () => {
  it('answers a cut that failed as a warning, the stream removed all the same', async () => {
    const { sessions, service } = await setup();
    sessions.open.set(9000, 2);
    await service.drain(9000, 60_000);
    sessions.cutFails = new Error('ss -K failed: Operation not permitted');
    expect(await service.remove(9000, { killSessions: true })).toEqual({
      warnings: ['its sessions could not be cut: ss -K failed: Operation not permitted'],
    });
    expect(service.get(9000)).toBeUndefined();
  });

  it('removes it at once, and cuts its sessions when asked', async () => {
    const { store, sessions, service } = await setup([record(9000), record(9001)]);
    sessions.open.set(9000, 2);
    sessions.open.set(9001, 2);
    await service.drain(9000, 60_000);
    await service.drain(9001, 60_000);
    await service.remove(9000);
    await service.remove(9001, { killSessions: true });
    expect(sessions.cuts).toEqual([9001]);
    expect([...store.records.keys()]).toEqual([]);
    expect(service.list()).toEqual([]);
  });
});
