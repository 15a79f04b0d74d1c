/**
 * Route calls in fleet mode (fleet/routes.ts) against an in-memory key with a conditional write:
 * a route call is a read-modify-write, tried again on a fresh read when another change of the key
 * got in between, so that two calls at once both end up in the definition; refusals (a name twice,
 * a plain stream, a range, a draining port) are never retried and write nothing; a change under
 * way elsewhere is waited for, never built on.
 */
import { describe, expect, it } from '@jest/globals';
import {
  ConductorError,
  ErrorCode,
  type RouteSpec,
  routeId,
  type StreamRecord,
  simpleSpec,
} from '@stream-conductor/shared';
import type { Desired } from '../src/fleet/keys.js';
import { FleetRoutes, type RouteStore } from '../src/fleet/routes.js';
import { portWithRoute } from '../src/service/records.js';

const PORT = 7000;
const NOW = new Date('2026-12-06T12:00:00.000Z');
const CREATED = '2026-12-01T00:00:00.000Z';

const named = (name: string, backend = '10.0.0.1:443'): RouteSpec => ({
  kind: 'name',
  name,
  backends: [{ address: backend }],
});

/** One port's key in memory; a write holds only while the key's revision is the one read. */
class FakeKey implements RouteStore {
  revision = 1;
  desired: Desired | undefined;
  /** Ranges keyed at other ports, by a port they hold. */
  readonly ranges = new Map<number, StreamRecord>();
  /** Runs before each write is checked (another client's change got in between). */
  beforeWrite: (() => void) | undefined;
  /** How many reads still see a change under way. */
  changingReads = 0;
  writes: Array<StreamRecord | null> = [];
  refuseWith: ConductorError | undefined;

  async read(): Promise<Desired | undefined> {
    return this.desired && { ...this.desired };
  }

  standing(current: Desired | undefined): StreamRecord | null {
    return current?.record ?? null;
  }

  changing(): boolean {
    if (this.changingReads === 0) return false;
    this.changingReads -= 1;
    return true;
  }

  async rangeHolding(port: number): Promise<StreamRecord | undefined> {
    return this.ranges.get(port);
  }

  async write(_port: number, current: Desired | undefined, next: StreamRecord | null): Promise<string[]> {
    const hook = this.beforeWrite;
    this.beforeWrite = undefined;
    hook?.();
    if (this.desired?.modRevision !== current?.modRevision)
      throw new ConductorError(ErrorCode.Conflict, `port ${PORT} was changed by another host meanwhile`);
    if (this.refuseWith) throw this.refuseWith;
    this.put(next);
    this.writes.push(next);
    return [];
  }

  /** Sets the key (another client's write, or a call's). */
  put(record: StreamRecord | null): void {
    this.revision += 1;
    this.desired =
      record === null ? undefined : { record, modRevision: String(this.revision), lease: '0', by: 'x', op: 'o' };
  }

  names(): string[] {
    return (this.desired?.record.routes ?? []).map(routeId);
  }
}

const routed = (...routes: RouteSpec[]): StreamRecord => ({
  ...portWithRoute(PORT, routes[0] as RouteSpec),
  routes,
  backends: routes.flatMap((route) => route.backends),
  createdAt: CREATED,
});

function routesOn(key: FakeKey, attempts = 6): FleetRoutes {
  return new FleetRoutes({ store: key, now: () => NOW, attempts, settleMs: 1_000, sleep: async () => undefined });
}

describe('adding a route in fleet mode', () => {
  it('makes the port with the route alone when the fleet has no stream there', async () => {
    const key = new FakeKey();
    const added = await routesOn(key).add(PORT, named('git.example.com'));
    expect(added.change).toBe('created');
    expect(added.record).toEqual({ ...portWithRoute(PORT, named('git.example.com')), createdAt: NOW.toISOString() });
    expect(key.names()).toEqual(['git.example.com']);
  });

  it('reads again and adds its route to the definition another client wrote in between: both routes stay', async () => {
    const key = new FakeKey();
    key.put(routed(named('git.example.com')));
    // Another host's route add commits between this call's read and its write.
    key.beforeWrite = () => key.put(routed(named('git.example.com'), named('db.example.com')));
    const added = await routesOn(key).add(PORT, named('other.example.com'));
    expect(added).toMatchObject({ change: 'replaced' });
    expect(key.names()).toEqual(['git.example.com', 'db.example.com', 'other.example.com']);
    expect(added.record).toMatchObject({ createdAt: CREATED, updatedAt: NOW.toISOString() });
    expect(key.writes).toHaveLength(1);
  });

  it('two calls at once through this host both end up in the definition', async () => {
    const key = new FakeKey();
    key.put(routed(named('git.example.com')));
    const routes = routesOn(key);
    await Promise.all([routes.add(PORT, named('a.example.com')), routes.add(PORT, named('b.example.com'))]);
    expect(key.names()).toEqual(['git.example.com', 'a.example.com', 'b.example.com']);
  });

  it('is refused 409 naming the route once other changes got in first every time, the definition theirs', async () => {
    const key = new FakeKey();
    key.put(routed(named('git.example.com')));
    let others = 0;
    const original = key.write.bind(key);
    key.write = async (port, current, next) => {
      others += 1;
      key.put(routed(named('git.example.com'), named(`other${others}.example.com`)));
      return original(port, current, next);
    };
    await expect(routesOn(key, 3).add(PORT, named('late.example.com'))).rejects.toMatchObject({
      code: ErrorCode.Conflict,
      message: `port ${PORT}: route late.example.com was not added: another change of the port got in first, 3 times in a row`,
    });
    expect(others).toBe(3);
    expect(key.names()).toEqual(['git.example.com', 'other3.example.com']);
  });

  it.each<[string, () => StreamRecord, RouteSpec, RegExp]>([
    [
      'the name twice',
      () => routed(named('git.example.com')),
      named('git.example.com'),
      /already routes git\.example\.com/,
    ],
    [
      'a plain stream',
      () => ({ ...simpleSpec(PORT, '10.0.0.9:80'), createdAt: CREATED }),
      named('git.example.com'),
      /has a plain stream/,
    ],
    [
      'a draining port',
      () => ({ ...routed(named('git.example.com')), drainingUntil: '2026-12-06T12:05:00.000Z' }),
      named('db.example.com'),
      /is draining until 2026-12-06T12:05:00.000Z: its routes cannot change now/,
    ],
  ])('refuses %s 409 with nothing written, and tries no more', async (_what, record, route, message) => {
    const key = new FakeKey();
    key.put(record());
    const before = key.desired;
    await expect(routesOn(key).add(PORT, route)).rejects.toMatchObject({ code: ErrorCode.Conflict, message });
    expect(key.writes).toEqual([]);
    expect(key.desired).toEqual(before);
  });

  it('refuses a port inside a range keyed at another port as a plain stream, with nothing written', async () => {
    const key = new FakeKey();
    key.ranges.set(PORT, { ...simpleSpec(PORT - 2, '10.0.0.9:80'), portEnd: PORT + 2, createdAt: CREATED });
    await expect(routesOn(key).add(PORT, named('git.example.com'))).rejects.toMatchObject({
      code: ErrorCode.Conflict,
      message: expect.stringContaining(`ports ${PORT - 2}-${PORT + 2}`),
    });
    expect(key.writes).toEqual([]);
  });

  it("passes this host's own refusal on as it is, without trying again", async () => {
    const key = new FakeKey();
    key.put(routed(named('git.example.com')));
    key.refuseWith = new ConductorError(ErrorCode.NginxRejected, 'nginx refused it');
    await expect(routesOn(key).add(PORT, named('db.example.com'))).rejects.toBe(key.refuseWith);
  });

  it('waits for a change under way to settle and builds on its result', async () => {
    const key = new FakeKey();
    key.put(routed(named('git.example.com')));
    key.changingReads = 2;
    const sleeps: number[] = [];
    const routes = new FleetRoutes({
      store: key,
      now: () => NOW,
      settleMs: 60_000,
      sleep: async (ms) => {
        sleeps.push(ms);
        // The change under way settles while this call waits.
        if (sleeps.length === 2) key.put(routed(named('git.example.com'), named('db.example.com')));
      },
    });
    await routes.add(PORT, named('other.example.com'));
    expect(sleeps).toHaveLength(2);
    expect(key.names()).toEqual(['git.example.com', 'db.example.com', 'other.example.com']);
  });

  it('is refused 409 when a change under way does not settle in time, with nothing written', async () => {
    const key = new FakeKey();
    key.put(routed(named('git.example.com')));
    key.changingReads = Number.POSITIVE_INFINITY;
    const routes = new FleetRoutes({
      store: key,
      now: () => NOW,
      settleMs: 0,
      sleep: async () => undefined,
    });
    await expect(routes.add(PORT, named('db.example.com'))).rejects.toMatchObject({
      code: ErrorCode.Conflict,
      message: `port ${PORT}: another change of it has been under way for 0 s; its routes were not changed`,
    });
    expect(key.writes).toEqual([]);
  });
});

describe('removing a route in fleet mode', () => {
  it('writes the definition without it, or removes the key with the last one, on condition of the read', async () => {
    const key = new FakeKey();
    key.put(routed(named('git.example.com'), named('db.example.com')));
    const routes = routesOn(key);
    const first = await routes.remove(PORT, 'git.example.com');
    expect(first.record?.routes?.map(routeId)).toEqual(['db.example.com']);
    expect(first.record?.backends).toEqual([{ address: '10.0.0.1:443' }]);
    const last = await routes.remove(PORT, 'db.example.com');
    expect(last.record).toBeNull();
    expect(key.desired).toBeUndefined();
    expect(key.writes.at(-1)).toBeNull();
  });

  it('keeps a route another client added in between: the port is not removed with it', async () => {
    const key = new FakeKey();
    key.put(routed(named('git.example.com')));
    key.beforeWrite = () => key.put(routed(named('git.example.com'), named('db.example.com')));
    const removed = await routesOn(key).remove(PORT, 'git.example.com');
    expect(removed.record?.routes?.map(routeId)).toEqual(['db.example.com']);
    expect(key.names()).toEqual(['db.example.com']);
  });

  it.each<[string, () => StreamRecord | undefined, string, ErrorCode, RegExp]>([
    ['no stream', () => undefined, 'git.example.com', ErrorCode.NotFound, /no stream listens on port 7000/],
    ['no such route', () => routed(named('git.example.com')), 'db.example.com', ErrorCode.NotFound, /has no route db/],
    [
      'a plain stream',
      () => ({ ...simpleSpec(PORT, '10.0.0.9:80'), createdAt: CREATED }),
      'git.example.com',
      ErrorCode.NotFound,
      /has a plain stream/,
    ],
    [
      'a draining port',
      () => ({ ...routed(named('git.example.com')), drainingUntil: '2026-12-06T12:05:00.000Z' }),
      'git.example.com',
      ErrorCode.Conflict,
      /is draining/,
    ],
  ])('refuses %s with nothing written', async (_what, record, id, code, message) => {
    const key = new FakeKey();
    const given = record();
    if (given) key.put(given);
    await expect(routesOn(key).remove(PORT, id)).rejects.toMatchObject({ code, message });
    expect(key.writes).toEqual([]);
  });
});
