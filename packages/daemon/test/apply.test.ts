/**
 * Declarative applies: checking a set, planning it, and applying it over several nginx masters
 * all or nothing (a refused part puts back the parts already applied and changes nothing else).
 * nginx, the store and the port probe are fakes (service-fakes.ts).
 */

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type ApplyPlan, ConductorError, ErrorCode, type StreamSpec, simpleSpec } from '@stream-conductor/shared';
import type { Logger } from '../src/log.js';
import { silentLogger } from '../src/log.js';
import { applyAllOrNothing, checkStreamSet, groupChanges, planApply } from '../src/service/apply.js';
import type { Conductor } from '../src/service/local.js';
import { specOf } from '../src/service/records.js';
import { FakeInstance, MemoryStore, record, startLocalService } from './service-fakes.js';

describe('checkStreamSet', () => {
  it('checks every port once and refuses a port named twice', () => {
    const checked: number[] = [];
    const specs = [simpleSpec(9000, 'a:1'), simpleSpec(9001, 'a:1'), simpleSpec(9000, 'b:1')];
    expect(() => checkStreamSet(specs, (port) => checked.push(port))).toThrow('port 9000 appears twice in the set');
    expect(checked).toEqual([9000, 9001]);
  });

  it("passes on the check's refusal", () => {
    const refuse = (port: number): void => {
      if (port > 9001) throw new ConductorError(ErrorCode.PortOutOfRange, `port ${port} is outside`);
    };
    expect(() => checkStreamSet([simpleSpec(9000, 'a:1'), simpleSpec(9002, 'a:1')], refuse)).toThrow(
      'port 9002 is outside',
    );
  });
});

describe('planApply', () => {
  const standing = new Map<number, { record: StreamSpec; live: boolean }>([
    [9000, { record: simpleSpec(9000, 'a:1'), live: true }],
    [9001, { record: simpleSpec(9001, 'a:1'), live: true }],
    [9002, { record: simpleSpec(9002, 'a:1'), live: false }],
    [9003, { record: simpleSpec(9003, 'a:1'), live: true }],
  ]);
  const plan = (specs: StreamSpec[], prune: boolean): ApplyPlan =>
    planApply(specs, prune, (port) => standing.get(port), standing.keys());

  // [what, the set, prune, the plan]
  it.each<[string, StreamSpec[], boolean, ApplyPlan]>([
    [
      'the same set changes nothing but a stream that is not live',
      [...standing.values()].map((now) => now.record),
      false,
      { create: [], update: [9002], delete: [], unchanged: [9000, 9001, 9003] },
    ],
    [
      'a new port is created, a changed one updated',
      [simpleSpec(9005, 'a:1'), simpleSpec(9001, 'b:1')],
      false,
      { create: [9005], update: [9001], delete: [], unchanged: [] },
    ],
    [
      'prune deletes what the set leaves out',
      [simpleSpec(9001, 'a:1')],
      true,
      { create: [], update: [], delete: [9000, 9002, 9003], unchanged: [9001] },
    ],
    [
      'an empty set with prune deletes everything',
      [],
      true,
      { create: [], update: [], delete: [9000, 9001, 9002, 9003], unchanged: [] },
    ],
    [
      'each list is sorted',
      [simpleSpec(9009, 'a:1'), simpleSpec(9007, 'a:1'), simpleSpec(9008, 'a:1')],
      false,
      { create: [9007, 9008, 9009], update: [], delete: [], unchanged: [] },
    ],
  ])('%s', (_what, specs, prune, expected) => {
    expect(plan(specs, prune)).toEqual(expected);
  });

  it('refuses to move a live stream to another listen address', () => {
    expect(() => plan([{ ...simpleSpec(9000, 'a:1'), listenAddress: '127.0.0.2' }], false)).toThrow(
      expect.objectContaining({
        code: ErrorCode.Conflict,
        hint: 'remove the stream, then create it with the new address',
      }),
    );
  });

  it('moves a stream that is not live, and counts the default address as the same address', () => {
    const current = (port: number) =>
      port === 9000
        ? { record: simpleSpec(9000, 'a:1'), live: true }
        : { record: simpleSpec(port, 'a:1'), live: false };
    const specs = [
      { ...simpleSpec(9000, 'a:1'), listenAddress: '127.0.0.1' },
      { ...simpleSpec(9001, 'a:1'), listenAddress: '127.0.0.2' },
    ];
    expect(planApply(specs, false, current, [], '127.0.0.1')).toEqual({
      create: [],
      update: [9000, 9001],
      delete: [],
      unchanged: [],
    });
  });
});

/** A logger that keeps its error lines. */
function recordingLogger(): Logger & { errors: string[] } {
  const errors: string[] = [];
  const log: Logger & { errors: string[] } = {
    ...silentLogger,
    errors,
    error: (message: string) => errors.push(message),
    child: () => log,
  };
  return log;
}

describe('applyAllOrNothing', () => {
  function masters(): [FakeInstance, FakeInstance, FakeInstance] {
    const instances: [FakeInstance, FakeInstance, FakeInstance] = [
      new FakeInstance(0),
      new FakeInstance(1),
      new FakeInstance(2),
    ];
    for (const instance of instances) instance.load([record(9000 + instance.id * 10), record(9001 + instance.id * 10)]);
    return instances;
  }
  // Every master: its first port gets a new backend, its second is removed, a new port is created.
  const parts = (instances: FakeInstance[]) =>
    groupChanges(
      instances.flatMap((instance) => [9000, 9001, 9005].map((port) => [port + instance.id * 10, instance] as const)),
      (port, existing) =>
        port % 10 === 0
          ? { ...record(port, '10.9.9.9:1'), createdAt: existing?.createdAt ?? '' }
          : port % 10 === 5
            ? record(port)
            : undefined,
    );

  it('applies every part and answers their warnings', async () => {
    const instances = masters();
    expect(await applyAllOrNothing(parts(instances), silentLogger)).toEqual([
      'nginx 0: 3 change(s)',
      'nginx 1: 3 change(s)',
      'nginx 2: 3 change(s)',
    ]);
    for (const instance of instances)
      expect(Object.keys(instance.snapshot()).map(Number)).toEqual([instance.id * 10 + 9000, instance.id * 10 + 9005]);
  });

  it('puts back the parts already applied when one is refused, and leaves the rest alone', async () => {
    const instances = masters();
    const before = instances.map((instance) => instance.snapshot());
    instances[1].refuse.add(9015);
    const log = recordingLogger();
    await expect(applyAllOrNothing(parts(instances), log)).rejects.toMatchObject({ code: ErrorCode.NginxRejected });
    expect(instances.map((instance) => instance.snapshot())).toEqual(before);
    expect(instances.map((instance) => instance.submitted.length)).toEqual([2, 1, 0]);
    expect(log.errors).toEqual([]);
  });

  it('logs a part it could not put back, and still throws the refusal', async () => {
    const instances = masters();
    const log = recordingLogger();
    const planned = parts(instances);
    instances[2].refuse.add(9025);
    // Master 0 takes its part, then refuses everything, its undo included.
    const forward = instances[0].submit.bind(instances[0]);
    instances[0].submit = async (mutation) => {
      const result = await forward(mutation);
      instances[0].refuse.add(9000);
      return result;
    };
    await expect(applyAllOrNothing(planned, log)).rejects.toThrow('nginx 2 refused port 9025');
    expect(log.errors).toEqual(['could not put back a part of a refused apply']);
    expect(instances[1].snapshot()).toEqual(masters()[1].snapshot());
  });
});

describe('the local service applies all or nothing', () => {
  let legacyFolder = '';
  beforeAll(async () => {
    legacyFolder = await mkdtemp(join(tmpdir(), 'apply-'));
  });
  afterAll(async () => {
    await rm(legacyFolder, { recursive: true, force: true });
  });

  /** Two masters: 0 serves 9000 and 9001, 1 serves 9002 and 9003; 9020 is stored but outside the range. */
  async function conductor(): Promise<{ service: Conductor; a: FakeInstance; b: FakeInstance; store: MemoryStore }> {
    const [a, b] = [new FakeInstance(0, [9000, 9001]), new FakeInstance(1, [9002, 9003])];
    b.waitMs = 50; // new ports go to master 0
    const store = new MemoryStore([9000, 9001, 9002, 9003, 9020].map((port) => record(port)));
    const service = await startLocalService({
      instances: [a, b],
      store,
      portRange: { start: 9000, end: 9009 },
      legacyFolder,
    });
    return { service, a, b, store };
  }

  /** The set: 9000 gets a new backend, 9002 too, 9003 stays, 9004 is new, 9001 is pruned. */
  const desired = (): StreamSpec[] => [
    simpleSpec(9000, '10.9.9.9:1'),
    simpleSpec(9002, '10.9.9.9:1'),
    specOf(record(9003)),
    simpleSpec(9004, '10.9.9.9:1'),
  ];

  it('applies the set over both masters', async () => {
    const { service, a, b } = await conductor();
    const result = await service.apply(desired(), { prune: true, dryRun: false });
    expect(result.plan).toEqual({ create: [9004], update: [9000, 9002], delete: [9001], unchanged: [9003] });
    expect(Object.keys(a.snapshot()).map(Number)).toEqual([9000, 9004]);
    expect(Object.keys(b.snapshot()).map(Number)).toEqual([9002, 9003]);
    expect(a.get(9000)?.record).toMatchObject({
      createdAt: record(9000).createdAt,
      updatedAt: '2026-12-04T00:00:00.000Z',
    });
    await service.close();
  });

  it('restores the previous set when a master refuses its part, and changes nothing else', async () => {
    const { service, a, b, store } = await conductor();
    const before = { a: a.snapshot(), b: b.snapshot(), list: service.list(), commits: store.commits.length };
    b.refuse.add(9002);
    await expect(service.apply(desired(), { prune: true, dryRun: false })).rejects.toMatchObject({
      code: ErrorCode.NginxRejected,
    });
    expect(a.snapshot()).toEqual(before.a);
    expect(b.snapshot()).toEqual(before.b);
    expect(service.list()).toEqual(before.list);
    expect(store.commits.length).toBe(before.commits);
    // Master 0 applied its part and put it back; master 1 refused its own.
    expect(a.submitted.map((mutation) => mutation.kind)).toEqual(['group', 'group']);
    expect(b.submitted.map((mutation) => mutation.kind)).toEqual(['group']);
    // The new port went back to nobody: it is free to be placed anywhere again.
    expect(service.get(9004)).toBeUndefined();
    await expect(service.remove(9004)).rejects.toMatchObject({ code: ErrorCode.NotFound });
    await service.close();
  });

  it('changes nothing on a dry run', async () => {
    const { service, a, b } = await conductor();
    const result = await service.apply(desired(), { prune: true, dryRun: true });
    expect(result).toMatchObject({
      dryRun: true,
      applied: false,
      plan: { create: [9004], update: [9000, 9002], delete: [9001], unchanged: [9003] },
    });
    expect([...a.submitted, ...b.submitted]).toEqual([]);
    await service.close();
  });

  it('refuses a set that names a stored port outside the range before touching any master', async () => {
    const { service, a, b } = await conductor();
    await expect(
      service.apply([simpleSpec(9000, '10.9.9.9:1'), simpleSpec(9020, '10.9.9.9:1')], { prune: false, dryRun: false }),
    ).rejects.toMatchObject({
      code: ErrorCode.PortOutOfRange,
    });
    expect([...a.submitted, ...b.submitted]).toEqual([]);
    await service.close();
  });
});
