/**
 * Routes by TLS server name in fleet mode. A route call is a read-modify-write of the port's one
 * definition in the fleet's store: read the port's key, add or remove the route by the rules a
 * single host follows (service/records.ts: withRoute, withoutRoute), and write the result on
 * condition that the key is still as read (fleet/writes.ts, step 1 compares its mod revision).
 * When another client's change got in between (409 from the write, the key no longer as read),
 * the call reads again and tries again, a bounded number of times; past that it is refused 409
 * naming the route. So two route calls on one port through two hosts at once both end up in the
 * definition, or the later one is refused: neither is lost while its caller is told it was done.
 *
 * A call first waits for a change of the key under way (a fresh pending value) to settle, and
 * reads the result: a route call is only ever based on a settled definition. (Based on a pending
 * value, it could carry a change that is then refused, and two hosts writing over each other's
 * pending values would only take turns losing.) A change still under way after SETTLE_MS is
 * refused 409. Route calls on one port through this host run one after another.
 */
import {
  ConductorError,
  ErrorCode,
  type RouteSpec,
  routeId,
  type StreamRecord,
  type StreamSpec,
} from '@stream-conductor/shared';
import { portWithRoute, withoutRoute, withRoute } from '../service/records.js';
import { PortTurns } from '../service/turns.js';
import type { Desired } from './keys.js';

/** What a route call needs of the fleet's store (FleetWrites and the cache, in FleetConductor). */
export interface RouteStore {
  /** The port's key, read now. */
  read(port: number): Promise<Desired | undefined>;
  /** The stream a key stands for now (see FleetWrites.standing). */
  standing(current: Desired | undefined): StreamRecord | null;
  /** Whether a change of the key is under way: a fresh pending value of a host that is up. */
  changing(current: Desired | undefined): boolean;
  /** The fleet's range that holds `port` when that range is keyed at another port. */
  rangeHolding(port: number): Promise<StreamRecord | undefined>;
  /** Writes `next` (null: the key goes) on condition that the key is still `current`; resolves once live here. */
  write(port: number, current: Desired | undefined, next: StreamRecord | null): Promise<string[]>;
}

export interface RouteChangesOptions {
  store: RouteStore;
  now: () => Date;
  /** How many times a call is written before it is refused 409 (each after a fresh read). */
  attempts?: number;
  /** How long a call waits for another change of the key under way to settle before it is refused. */
  settleMs?: number;
  sleep?: (ms: number) => Promise<void>;
}

export interface RouteAdded {
  record: StreamRecord;
  change: 'created' | 'replaced';
  warnings: string[];
}

export interface RouteRemoved {
  /** The port's definition now; null: it was the last route, the port is gone. */
  record: StreamRecord | null;
  warnings: string[];
}

const ATTEMPTS = 6;
const SETTLE_MS = 10_000;

/** 409 for a route change on a draining port (its sessions are ending), as on a single host. */
export function refuseDraining(record: StreamRecord, port: number): void {
  if (record.drainingUntil === undefined) return;
  throw new ConductorError(
    ErrorCode.Conflict,
    `stream ${port} is draining until ${record.drainingUntil}: its routes cannot change now`,
    { hint: `call the drain off first: conductor drain ${port} --cancel` },
  );
}

/** The record `spec` becomes when it replaces `before` at `now`. */
function replacing(spec: StreamSpec, before: StreamRecord, now: Date): StreamRecord {
  return { ...spec, createdAt: before.createdAt, updatedAt: now.toISOString() };
}

export class FleetRoutes {
  /** The last route call on each port through this host. */
  private readonly turns = new PortTurns();
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(private readonly options: RouteChangesOptions) {
    this.sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
  }

  /** Adds `route` to `port` (the port made with it alone when the fleet has no stream there). */
  add(port: number, route: RouteSpec): Promise<RouteAdded> {
    return this.turns.run(port, () =>
      this.retrying(port, `route ${routeId(route)} was not added`, async (current) => {
        const { store, now } = this.options;
        const standing = store.standing(current);
        if (!standing) {
          // A range keyed at another port refuses it as a plain stream on the port would.
          const range = await store.rangeHolding(port);
          if (range) withRoute(range, route, port);
          const record: StreamRecord = { ...portWithRoute(port, route), createdAt: now().toISOString() };
          return { record, change: 'created', warnings: await store.write(port, current, record) };
        }
        refuseDraining(standing, port);
        const record = replacing(withRoute(standing, route, port), standing, now());
        return { record, change: 'replaced', warnings: await store.write(port, current, record) };
      }),
    );
  }

  /** Removes the route `id` (a name, @default or @no-tls); the last one takes the port with it. */
  remove(port: number, id: string): Promise<RouteRemoved> {
    return this.turns.run(port, () =>
      this.retrying(port, `route ${id} was not removed`, async (current) => {
        const { store, now } = this.options;
        const standing = store.standing(current);
        if (!standing) {
          const range = await store.rangeHolding(port);
          if (range) withoutRoute(range, id, port);
          throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
        }
        refuseDraining(standing, port);
        const rest = withoutRoute(standing, id, port);
        // The last route: the key goes, on condition that it still holds what was read here.
        if (rest === undefined) return { record: null, warnings: await store.write(port, current, null) };
        const record = replacing(rest, standing, now());
        return { record, warnings: await store.write(port, current, record) };
      }),
    );
  }

  /**
   * Runs `work` on the port's key as read, again on a fresh read when its write was refused
   * because another client changed the key since (and only then).
   */
  private async retrying<T>(
    port: number,
    what: string,
    work: (current: Desired | undefined) => Promise<T>,
  ): Promise<T> {
    const attempts = this.options.attempts ?? ATTEMPTS;
    for (let attempt = 1; ; attempt += 1) {
      const current = await this.settledRead(port);
      try {
        return await work(current);
      } catch (error) {
        if (!(error instanceof ConductorError) || error.code !== ErrorCode.Conflict) throw error;
        if (!changed(current, await this.options.store.read(port))) throw error;
        if (attempt >= attempts)
          throw new ConductorError(
            ErrorCode.Conflict,
            `port ${port}: ${what}: another change of the port got in first, ${attempts} times in a row`,
            { hint: `look at it again (conductor get ${port}) and retry`, cause: error },
          );
        // Apart, so that two hosts retrying at once do not meet again.
        await this.sleep(25 + Math.floor(Math.random() * 100 * attempt));
      }
    }
  }

  /** The port's key once no change of it is under way; 409 when one still is after settleMs. */
  private async settledRead(port: number): Promise<Desired | undefined> {
    const { store } = this.options;
    const settleMs = this.options.settleMs ?? SETTLE_MS;
    const deadline = Date.now() + settleMs;
    for (let pause = 20; ; pause = Math.min(pause * 2, 320)) {
      const current = await store.read(port);
      if (!store.changing(current)) return current;
      if (Date.now() >= deadline)
        throw new ConductorError(
          ErrorCode.Conflict,
          `port ${port}: another change of it has been under way for ${settleMs / 1000} s; its routes were not changed`,
          { hint: `look at it again (conductor get ${port}) and retry` },
        );
      await this.sleep(pause);
    }
  }
}

/** Whether a key read again differs from the read a write was based on. */
function changed(read: Desired | undefined, now: Desired | undefined): boolean {
  return read?.modRevision !== now?.modRevision;
}
