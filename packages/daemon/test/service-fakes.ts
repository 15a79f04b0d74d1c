/**
 * Stand-ins for what the service drives, for its unit tests: an nginx instance that keeps its
 * streams in a map and refuses the ports it is told to, a store that keeps its records in a map,
 * and a port probe with a set of held ports.
 */
import {
  ConductorError,
  ErrorCode,
  type NginxStatus,
  type PortRange,
  type StreamRecord,
  simpleSpec,
} from '@stream-conductor/shared';
import { silentLogger } from '../src/log.js';
import type { Entry, Mutation, MutationResult } from '../src/nginx/instance.js';
import type { FolderScan } from '../src/nginx/stream-files.js';
import type { SessionControl } from '../src/service/drain.js';
import { Conductor } from '../src/service/local.js';
import type { ServiceInstance } from '../src/service/placement.js';
import type { StoreChange, StoreLoad, StreamStore } from '../src/streams/store.js';
import type { PortProbe } from '../src/sys/ports.js';

export const CREATED_AT = '2026-12-01T00:00:00.000Z';

export function record(port: number, backend = `10.0.0.1:${port}`): StreamRecord {
  return { ...simpleSpec(port, backend), createdAt: CREATED_AT };
}

export class FakeInstance implements ServiceInstance {
  readonly entries = new Map<number, Entry>();
  readonly submitted: Mutation[] = [];
  /** What expectedWaitMs answers. */
  waitMs = 0;
  /** A change (or a group) that touches one of these ports is refused, as nginx would. */
  readonly refuse = new Set<number>();
  /** A create or put on one of these ports finds it held by another process. */
  readonly inUse = new Set<number>();
  readonly files: { scan(): Promise<FolderScan> };

  /** `ours`: the ports whose files this instance's folder holds at start-up. */
  constructor(
    readonly id: number,
    ours: number[] = [],
  ) {
    this.files = { scan: async () => ({ ours, legacy: [], temporary: [] }) };
  }

  load(records: StreamRecord[]): void {
    for (const loaded of records) this.entries.set(loaded.port, { record: loaded, state: 'live' });
  }

  list(): Entry[] {
    return [...this.entries.values()];
  }

  get(port: number): Entry | undefined {
    return this.entries.get(port);
  }

  expectedWaitMs(): number {
    return this.waitMs;
  }

  /** The records this instance serves, by port. */
  snapshot(): Record<number, StreamRecord> {
    return Object.fromEntries([...this.entries].map(([port, entry]) => [port, entry.record]));
  }

  private refused(port: number): ConductorError {
    return new ConductorError(ErrorCode.NginxRejected, `nginx ${this.id} refused port ${port}`);
  }

  async submit(mutation: Mutation): Promise<MutationResult> {
    this.submitted.push(mutation);
    switch (mutation.kind) {
      case 'create':
      case 'put': {
        const { port } = mutation.record;
        const existing = this.entries.get(port);
        if (mutation.kind === 'create' && existing)
          throw new ConductorError(ErrorCode.StreamExists, `port ${port} has a stream`);
        if (this.inUse.has(port)) throw new ConductorError(ErrorCode.PortInUse, `port ${port} is in use`);
        if (this.refuse.has(port)) throw this.refused(port);
        const entry: Entry = { record: mutation.record, state: 'live' };
        this.entries.set(port, entry);
        return { warnings: [], change: existing ? 'replaced' : 'created', entry };
      }
      case 'remove':
        if (!this.entries.delete(mutation.port))
          throw new ConductorError(ErrorCode.NotFound, `no stream on ${mutation.port}`);
        return { warnings: [], change: 'removed' };
      case 'group': {
        const refused = mutation.changes.find((change) => this.refuse.has(change.port));
        if (refused) throw this.refused(refused.port);
        for (const { port, record: next } of mutation.changes) {
          if (next) this.entries.set(port, { record: next, state: 'live' });
          else this.entries.delete(port);
        }
        return { warnings: [`nginx ${this.id}: ${mutation.changes.length} change(s)`], change: 'applied' };
      }
    }
  }

  async start(): Promise<void> {}

  async reviveHeldPorts(): Promise<void> {}

  status(): NginxStatus {
    return { state: 'running', restarts: 0 };
  }

  async close(): Promise<void> {}
}

export class MemoryStore implements StreamStore {
  readonly records = new Map<number, StreamRecord>();
  readonly commits: StoreChange[] = [];

  constructor(records: StreamRecord[] = []) {
    for (const stored of records) this.records.set(stored.port, stored);
  }

  async load(): Promise<StoreLoad> {
    return { records: [...this.records.values()], problems: [] };
  }

  async commit(change: StoreChange): Promise<void> {
    this.commits.push(change);
    for (const stored of change.put) this.records.set(stored.port, stored);
    for (const port of change.remove) this.records.delete(port);
  }
}

/** A probe that answers in-use for `held` and free for every other port; it records what it was asked. */
export function fakeProbe(held: Iterable<number> = []): {
  probe: (port: number) => Promise<PortProbe>;
  held: Set<number>;
  asked: number[];
} {
  const state = { held: new Set(held), asked: [] as number[] };
  return {
    ...state,
    probe: async (port) => {
      state.asked.push(port);
      return state.held.has(port) ? 'in-use' : 'free';
    },
  };
}

/** The local service over fake parts, started; `legacyFolder` is an existing folder to scan for old-format files. */
export async function startLocalService(parts: {
  instances: FakeInstance[];
  store: MemoryStore;
  portRange: PortRange;
  legacyFolder: string;
  probe?: (port: number) => Promise<PortProbe>;
  sessions?: SessionControl;
  now?: () => Date;
  drainIntervalMs?: number;
}): Promise<Conductor> {
  const service = new Conductor({
    version: 'test',
    mode: 'managed',
    portRange: parts.portRange,
    store: parts.store,
    instances: parts.instances,
    legacyFolder: parts.legacyFolder,
    streamPrefix: '_conductor_',
    probePort: parts.probe ?? fakeProbe().probe,
    log: silentLogger,
    now: parts.now ?? (() => new Date('2026-12-04T00:00:00.000Z')),
    ...(parts.sessions ? { sessions: parts.sessions } : {}),
    ...(parts.drainIntervalMs !== undefined ? { drainIntervalMs: parts.drainIntervalMs } : {}),
  });
  await service.start();
  return service;
}
