/**
 * Where a port goes: free-port allocation over the range (taken, reserved and held ports, races),
 * and which nginx master serves each port (soonest to reload, stays put, start-up placement).
 */

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { ConductorError, ErrorCode, type PortRange, type StreamRecord, simpleSpec } from '@stream-conductor/shared';
import { createOnFreePort, firstFreePort, noFreePort, type PortSearch } from '../src/service/free-port.js';
import type { Conductor } from '../src/service/local.js';
import { Placement, soonest } from '../src/service/placement.js';
import { FakeInstance, fakeProbe, MemoryStore, record, startLocalService } from './service-fakes.js';

const RETRY_ON = [ErrorCode.StreamExists, ErrorCode.PortInUse] as const;

function search(
  range: PortRange,
  taken: number[] = [],
  reserved: number[] = [],
  held: number[] = [],
): PortSearch & { asked: number[] } {
  const probe = fakeProbe(held);
  const spoken = new Set(taken);
  return {
    range,
    reserved: new Set(reserved),
    taken: (port) => spoken.has(port),
    probe: probe.probe,
    asked: probe.asked,
  };
}

describe('noFreePort', () => {
  it('is the one error with its code, message and hint', () => {
    const error = noFreePort();
    expect(error).toBeInstanceOf(ConductorError);
    expect(error.code).toBe(ErrorCode.NoFreePort);
    expect(error.message).toBe('no free port left in the port range');
    expect(error.hint).toBe('remove streams, or widen PORT_RANGE');
  });
});

// [what, range, taken (streams), reserved (allocations under way), held (other processes), answer]
const CASES: Array<[string, PortRange, number[], number[], number[], number | undefined]> = [
  ['all free: the first port', { start: 9000, end: 9009 }, [], [], [], 9000],
  ['the first ports have streams', { start: 9000, end: 9009 }, [9000, 9001], [], [], 9002],
  ['another process holds the first port', { start: 9000, end: 9009 }, [], [], [9000], 9001],
  ['an allocation is trying the first port', { start: 9000, end: 9009 }, [], [9000], [], 9001],
  ['a mix: only the last port is left', { start: 9000, end: 9003 }, [9000], [9001], [9002], 9003],
  ['a one-port range, free', { start: 7000, end: 7000 }, [], [], [], 7000],
  ['a one-port range, taken', { start: 7000, end: 7000 }, [7000], [], [], undefined],
  ['every port spoken for', { start: 9000, end: 9002 }, [9000], [9001], [9002], undefined],
  ['the top of the port space', { start: 65534, end: 65535 }, [65534], [], [], 65535],
];

describe('firstFreePort', () => {
  it.each(CASES)('%s', async (_what, range, taken, reserved, held, expected) => {
    expect(await firstFreePort(search(range, taken, reserved, held))).toBe(expected);
  });

  it('probes only ports that are neither taken nor reserved, and does not reserve the answer', async () => {
    const found = search({ start: 9000, end: 9005 }, [9000, 9002], [9001], [9003]);
    expect(await firstFreePort(found)).toBe(9004);
    expect(found.asked).toEqual([9003, 9004]);
    expect([...found.reserved]).toEqual([9001]);
  });
});

describe('createOnFreePort', () => {
  it.each(CASES)('%s', async (_what, range, taken, reserved, held, expected) => {
    const allocation = createOnFreePort(
      { ...search(range, taken, reserved, held), retryOn: RETRY_ON },
      async (port) => port,
    );
    if (expected === undefined)
      await expect(allocation).rejects.toMatchObject({
        code: ErrorCode.NoFreePort,
        hint: 'remove streams, or widen PORT_RANGE',
      });
    else expect(await allocation).toBe(expected);
  });

  it('holds the port reserved while the attempt runs, and frees it after', async () => {
    const found = search({ start: 9000, end: 9009 });
    let during: boolean | undefined;
    const port = await createOnFreePort({ ...found, retryOn: RETRY_ON }, async (candidate) => {
      during = found.reserved.has(candidate);
      return candidate;
    });
    expect(port).toBe(9000);
    expect(during).toBe(true);
    expect(found.reserved.size).toBe(0);
  });

  it.each([ErrorCode.StreamExists, ErrorCode.PortInUse])(
    'tries the next port when the attempt is refused with %s',
    async (code) => {
      const found = search({ start: 9000, end: 9009 });
      const tried: number[] = [];
      const port = await createOnFreePort({ ...found, retryOn: RETRY_ON }, async (candidate) => {
        tried.push(candidate);
        if (candidate < 9002) throw new ConductorError(code, 'won by another');
        return candidate;
      });
      expect(port).toBe(9002);
      expect(tried).toEqual([9000, 9001, 9002]);
      expect(found.reserved.size).toBe(0);
    },
  );

  it('tries the next port when the attempt answers nothing (another host is taking it)', async () => {
    const port = await createOnFreePort(
      { ...search({ start: 9000, end: 9009 }), retryOn: RETRY_ON },
      async (candidate) => (candidate === 9000 ? undefined : candidate),
    );
    expect(port).toBe(9001);
  });

  it('throws any other refusal at once, with the port no longer reserved', async () => {
    const found = search({ start: 9000, end: 9009 });
    const tried: number[] = [];
    const allocation = createOnFreePort({ ...found, retryOn: RETRY_ON }, async (candidate) => {
      tried.push(candidate);
      throw new ConductorError(ErrorCode.NginxUnavailable, 'nginx is down');
    });
    await expect(allocation).rejects.toMatchObject({ code: ErrorCode.NginxUnavailable });
    expect(tried).toEqual([9000]);
    expect(found.reserved.size).toBe(0);
  });

  it('skips a port taken while it was being probed', async () => {
    const spoken = new Set<number>();
    const port = await createOnFreePort(
      {
        range: { start: 9000, end: 9009 },
        reserved: new Set(),
        taken: (candidate) => spoken.has(candidate),
        probe: async (candidate) => {
          if (candidate === 9000) spoken.add(9000); // another request created it meanwhile
          return 'free';
        },
        retryOn: RETRY_ON,
      },
      async (candidate) => candidate,
    );
    expect(port).toBe(9001);
  });

  it('gives concurrent allocations different ports', async () => {
    const reserved = new Set<number>();
    const shared = {
      range: { start: 9000, end: 9009 },
      reserved,
      taken: () => false,
      probe: fakeProbe().probe,
      retryOn: RETRY_ON,
    };
    let release: () => void = () => undefined;
    const gate = new Promise<void>((done) => {
      release = done;
    });
    const first = createOnFreePort(shared, async (port) => {
      await gate;
      return port;
    });
    await new Promise((done) => setImmediate(done));
    const second = createOnFreePort(shared, async (port) => port);
    expect(await second).toBe(9001);
    release();
    expect(await first).toBe(9000);
  });
});

describe('soonest', () => {
  // [what, [wait ms, streams] per instance, the id chosen]
  it.each<[string, Array<[number, number]>, number]>([
    ['one instance', [[500, 9]], 0],
    [
      'the one that can reload first',
      [
        [100, 0],
        [0, 5],
        [50, 0],
      ],
      1,
    ],
    [
      'among equal waits, the one with fewest streams',
      [
        [0, 3],
        [0, 1],
        [0, 2],
      ],
      1,
    ],
    [
      'among equals, the first',
      [
        [0, 1],
        [0, 1],
      ],
      0,
    ],
    [
      'a wait beats a count',
      [
        [0, 10],
        [1, 0],
      ],
      0,
    ],
  ])('%s', (_what, shape, expected) => {
    const instances = shape.map(([wait, streams], id) => {
      const instance = new FakeInstance(id);
      instance.waitMs = wait;
      instance.load(Array.from({ length: streams }, (_, index) => record(10_000 * (id + 1) + index)));
      return instance;
    });
    expect(soonest(instances, Date.now()).id).toBe(expected);
  });
});

describe('Placement', () => {
  it('needs at least one instance', () => {
    expect(() => new Placement([])).toThrow('a conductor needs at least one nginx instance');
  });

  it('places a new port on the soonest instance and keeps it there while held', async () => {
    const [a, b] = [new FakeInstance(0), new FakeInstance(1)];
    a.waitMs = 100;
    const placement = new Placement([a, b]);
    const slot = placement.hold(9000);
    expect(slot.instance).toBe(b);
    b.waitMs = 200; // b got busy: the port stays anyway
    expect(placement.hold(9000).instance).toBe(b);
    expect(slot.inflight).toBe(2);
    placement.release(9000, slot);
    placement.release(9000, slot);
    // Nothing was created on it: the port is free to go anywhere again.
    expect(placement.ownerOf(9000)).toBeUndefined();
    expect(placement.hold(9000).instance).toBe(a);
  });

  it('keeps the owner of a port that has a stream after the last hold', async () => {
    const a = new FakeInstance(0);
    const placement = new Placement([a, new FakeInstance(1)]);
    await placement.onOwner(9000, (instance) => instance.submit({ kind: 'create', record: record(9000) }));
    expect(placement.ownerOf(9000)).toBe(a);
  });

  it('at start-up keeps each stream with the instance whose folder holds its file and spreads the others', async () => {
    const instances = [new FakeInstance(0, [9005]), new FakeInstance(1, [9001, 9002]), new FakeInstance(2)];
    const placement = new Placement(instances);
    const records = [9000, 9001, 9002, 9003, 9004, 9005, 9006].map((port) => record(port));
    const byInstance = await placement.assign(records);
    const ports = (instance: FakeInstance): number[] =>
      (byInstance.get(instance) ?? []).map((assigned: StreamRecord) => assigned.port);
    // 9000 -> 0 (all empty, the first); 9001, 9002 -> 1 (their files); 9003 -> 2 (fewest);
    // 9004 -> 0 (fewest, first among equals); 9005 -> 0 (its file); 9006 -> 2 (fewest).
    expect(instances.map(ports)).toEqual([
      [9000, 9004, 9005],
      [9001, 9002],
      [9003, 9006],
    ]);
    for (const [instance, assigned] of byInstance)
      for (const { port } of assigned) expect(placement.ownerOf(port)).toBe(instance);
  });
});

describe('the local service over several masters', () => {
  // An empty folder: no old-format files to take over.
  let legacyFolder = '';
  beforeAll(async () => {
    legacyFolder = await mkdtemp(join(tmpdir(), 'placement-'));
  });
  afterAll(async () => {
    await rm(legacyFolder, { recursive: true, force: true });
  });

  async function conductor(
    held: number[] = [],
  ): Promise<{ service: Conductor; instances: FakeInstance[]; asked: number[] }> {
    const instances = [new FakeInstance(0, [9000]), new FakeInstance(1, [9001])];
    const probe = fakeProbe(held);
    const service = await startLocalService({
      instances,
      store: new MemoryStore([record(9000), record(9001)]),
      portRange: { start: 9000, end: 9007 },
      legacyFolder,
      probe: probe.probe,
    });
    return { service, instances, asked: probe.asked };
  }

  it('creates on the master that can reload soonest', async () => {
    const { service, instances } = await conductor();
    const [a, b] = instances as [FakeInstance, FakeInstance];
    a.waitMs = 80;
    await service.create(simpleSpec(9004, '10.0.0.1:1'));
    expect(b.get(9004)).toBeDefined();
    b.waitMs = 90;
    await service.create(simpleSpec(9005, '10.0.0.1:1'));
    expect(a.get(9005)).toBeDefined();
    await service.close();
  });

  it('allocates the first port that has no stream, no allocation and no other holder', async () => {
    const { service, asked } = await conductor([9002]);
    expect(await service.freePort()).toBe(9003);
    const created = await service.create({ ...simpleSpec(9000, '10.0.0.1:1'), port: 0 });
    expect(created.stream.port).toBe(9003);
    expect(created.change).toBe('created');
    expect(asked).toEqual([9002, 9003, 9002, 9003]);
    await service.close();
  });

  it('moves on when the master finds the port held, and stops at any other refusal', async () => {
    const { service, instances } = await conductor();
    for (const instance of instances) {
      instance.inUse.add(9002);
      instance.refuse.add(9004);
    }
    const created = await service.create({ ...simpleSpec(9000, '10.0.0.1:1'), port: 0 });
    expect(created.stream.port).toBe(9003);
    await expect(service.create({ ...simpleSpec(9000, '10.0.0.1:1'), port: 0 })).rejects.toMatchObject({
      code: ErrorCode.NginxRejected,
    });
    expect(service.list().map((stream) => stream.port)).toEqual([9000, 9001, 9003]);
    await service.close();
  });

  it('answers no free port when the range is full', async () => {
    const { service } = await conductor([9002, 9003, 9004, 9005, 9006, 9007]);
    expect(await service.freePort()).toBeUndefined();
    await expect(service.create({ ...simpleSpec(9000, '10.0.0.1:1'), port: 0 })).rejects.toMatchObject({
      code: ErrorCode.NoFreePort,
    });
    await service.close();
  });
});
