/**
 * The fleet's write protocol (fleet/writes.ts) against an in-memory etcd: a change is written as
 * pending, applied on the host that takes it, then committed or taken back. Two hosts share one
 * fake store; each has its own cache, convergence and a fake local service. Conflicts (two writers
 * on one port), a lease that ended meanwhile, a host that refuses the change and a store that
 * stops answering each end the way the API promises.
 */
import { describe, expect, it } from '@jest/globals';
import {
  ConductorError,
  type CreateResult,
  type DaemonStatus,
  ErrorCode,
  type StreamRecord,
  type StreamSpec,
  type StreamView,
  sameSpec,
  simpleSpec,
} from '@stream-conductor/shared';
import { Convergence } from '../src/fleet/converge.js';
import { DesiredCache } from '../src/fleet/desired.js';
import type { Compare, FleetStore, Step } from '../src/fleet/etcd.js';
import { drainWarning } from '../src/fleet/fleet.js';
import { FleetKeys, type StoredKey } from '../src/fleet/keys.js';
import type { LocalService } from '../src/fleet/local.js';
import { FleetViews } from '../src/fleet/views.js';
import { FleetWrites, type PortWrite } from '../src/fleet/writes.js';
import { silentLogger } from '../src/log.js';

const PREFIX = '/test/';
const RANGE = { start: 7000, end: 7099 };

/** etcd in memory: revisions, transactions with compares, and leases whose end removes their keys. */
class FakeEtcd implements FleetStore {
  revision = 1;
  private nextLease = 100;
  readonly keys = new Map<string, StoredKey>();
  readonly leases = new Set<string>();
  /** Calls to fail, by kind, with the error to throw. */
  readonly failures: Array<{ call: 'txn' | 'get' | 'grantLease'; error: Error; times: number }> = [];
  /** Runs before each transaction (to let another writer in between). */
  beforeTxn: (() => void) | undefined;

  private fail(call: 'txn' | 'get' | 'grantLease'): void {
    const failure = this.failures.find((entry) => entry.call === call && entry.times > 0);
    if (!failure) return;
    failure.times -= 1;
    throw failure.error;
  }

  async get(key: string): Promise<{ kv: StoredKey | undefined; revision: string }> {
    this.fail('get');
    const kv = this.keys.get(key);
    return { kv: kv ? { ...kv } : undefined, revision: String(this.revision) };
  }

  async getPrefix(prefix: string): Promise<{ kvs: StoredKey[]; revision: string }> {
    const kvs = [...this.keys.values()].filter((kv) => kv.key.startsWith(prefix)).map((kv) => ({ ...kv }));
    return { kvs, revision: String(this.revision) };
  }

  async txn(compares: Compare[], steps: Step[]): Promise<{ succeeded: boolean; revision: string }> {
    this.beforeTxn?.();
    this.fail('txn');
    const holds = compares.every((compare) =>
      'absent' in compare
        ? !this.keys.has(compare.key)
        : this.keys.get(compare.key)?.modRevision === compare.modRevision,
    );
    if (!holds) return { succeeded: false, revision: String(this.revision) };
    for (const step of steps)
      if ('put' in step && step.lease !== '0' && !this.leases.has(step.lease))
        throw new Error('etcdserver: requested lease not found');
    this.revision += 1;
    const modRevision = String(this.revision);
    for (const step of steps) {
      if ('delete' in step) this.keys.delete(step.delete);
      else this.keys.set(step.put, { key: step.put, value: step.value, modRevision, lease: step.lease });
    }
    return { succeeded: true, revision: modRevision };
  }

  /** The length asked of each lease granted, by its id. */
  readonly granted = new Map<string, number>();

  async grantLease(seconds: number): Promise<string> {
    this.fail('grantLease');
    this.nextLease += 1;
    const id = String(this.nextLease);
    this.leases.add(id);
    this.granted.set(id, seconds);
    return id;
  }

  async revokeLease(id: string): Promise<void> {
    this.expire(id);
  }

  /** A lease ends: etcd removes its keys. */
  expire(id: string): void {
    if (!this.leases.delete(id)) return;
    let removed = false;
    for (const [key, kv] of this.keys) {
      if (kv.lease !== id) continue;
      this.keys.delete(key);
      removed = true;
    }
    if (removed) this.revision += 1;
  }

  /** Another client's plain put. */
  put(key: string, value: string, lease = '0'): void {
    this.revision += 1;
    this.keys.set(key, { key, value, modRevision: String(this.revision), lease });
  }

  value(port: number): { record?: StreamRecord; by?: string; op?: string; pending?: unknown } | undefined {
    const kv = this.keys.get(`${PREFIX}streams/${port}`);
    return kv ? JSON.parse(kv.value) : undefined;
  }
}

/**
 * This host's service, in memory: `refuse` makes a put (or a set's apply) fail, `during` runs inside
 * a put, `duringApply` inside a set's apply.
 */
class FakeLocal implements LocalService {
  readonly streams = new Map<number, StreamView>();
  readonly refuse = new Map<number, ConductorError>();
  /** Ports this host's pipeline takes but cannot run (it holds them failed, with this reason). */
  readonly holdFailed = new Map<number, string>();
  during: ((spec: StreamSpec) => unknown) | undefined;
  /** Runs inside a removal, before the stream is gone (its ports closing). */
  duringRemove: ((port: number) => void) | undefined;
  duringApply: ((puts: StreamSpec[], deletes: number[]) => void) | undefined;
  applies = 0;

  async start(): Promise<void> {}
  async close(): Promise<void> {}
  list(): StreamView[] {
    return [...this.streams.values()];
  }
  get(port: number): StreamView | undefined {
    return this.streams.get(port);
  }
  async put(spec: StreamSpec): Promise<CreateResult> {
    await this.during?.(spec);
    const refusal = this.refuse.get(spec.port);
    if (refusal) throw refusal;
    const reason = this.holdFailed.get(spec.port);
    const stream: StreamView = {
      ...spec,
      createdAt: new Date().toISOString(),
      ...(reason === undefined ? { state: 'live' } : { state: 'failed', reason }),
    };
    this.streams.set(spec.port, stream);
    return { stream, warnings: [], change: 'created' };
  }
  async remove(port: number): Promise<{ warnings: string[] }> {
    this.duringRemove?.(port);
    this.streams.delete(port);
    return { warnings: [] };
  }
  drains = 0;
  async drainUntil(port: number, deadline: Date): Promise<StreamView> {
    const stream = this.streams.get(port);
    if (!stream) throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
    this.drains += 1;
    // Its expiry at the latest, as the local service drains.
    const until = Math.min(deadline.getTime(), Date.parse(stream.expiresAt ?? '9999-12-31T00:00:00Z'));
    const draining: StreamView = { ...stream, state: 'draining', drainingUntil: new Date(until).toISOString() };
    this.streams.set(port, draining);
    return draining;
  }
  async undrain(port: number): Promise<CreateResult> {
    const { drainingUntil: _until, ...stream } = this.streams.get(port) as StreamView;
    const live: StreamView = { ...stream, state: 'live' };
    this.streams.set(port, live);
    return { stream: live, warnings: [], change: 'replaced' };
  }
  async applyChanges(puts: StreamSpec[], deletes: number[]): Promise<string[]> {
    this.applies += 1;
    this.duringApply?.(puts, deletes);
    for (const spec of puts) {
      const refusal = this.refuse.get(spec.port);
      if (refusal) throw refusal;
    }
    for (const spec of puts) {
      const reason = this.holdFailed.get(spec.port);
      this.streams.set(spec.port, {
        ...spec,
        createdAt: new Date().toISOString(),
        ...(reason === undefined ? { state: 'live' } : { state: 'failed', reason }),
      });
    }
    for (const port of deletes) this.streams.delete(port);
    return [];
  }
  async checkSetTls(): Promise<void> {}
  async checkHealth(port: number): Promise<StreamView> {
    return this.streams.get(port) as StreamView;
  }
  status(): DaemonStatus {
    throw new Error('not used');
  }
  setExpiryGate(): void {}
}

/** One host of the fleet on the shared fake store. */
function host(etcd: FakeEtcd, id: string, drained: (port: number, revision: string) => Promise<void> = async () => {}) {
  const keys = new FleetKeys(PREFIX);
  const cache = new DesiredCache(keys, () => new Date(), silentLogger);
  cache.saw('1'); // it has joined the fleet: read the store once
  for (const name of ['a', 'b'])
    cache.hosts.set(name, { id: name, api: `http://${name}`, version: 'test', startedAt: new Date(0).toISOString() });
  const local = new FakeLocal();
  const reports = new Map<number, string | undefined>();
  const reporter = {
    ready: () => true,
    write: async (port: number, text: string | undefined) => void reports.set(port, text),
  };
  const convergence = new Convergence({
    local,
    cache,
    reporter,
    portRange: RANGE,
    log: silentLogger,
    busy: () => false,
    drained: (port, revision) => drained(port, revision),
    now: () => new Date(),
  });
  const writes = new FleetWrites({
    store: etcd,
    keys,
    cache,
    convergence,
    local,
    hostId: id,
    now: () => new Date(),
    log: silentLogger,
    connected: () => true,
    reread: async () => {
      const all = await etcd.getPrefix(PREFIX);
      cache.takeAll(all.kvs, all.revision);
    },
  });
  /** A single change, as the API writes it: read the key, then write. */
  const change = async (port: number, next: StreamRecord | null): Promise<string[]> =>
    writes.write([{ port, current: await writes.read(port), next }], { kind: 'one' });
  return { cache, local, reports, convergence, writes, change };
}

const rec = (port: number, backend: string, extra: Partial<StreamRecord> = {}): StreamRecord => ({
  ...simpleSpec(port, backend),
  createdAt: '2026-12-01T00:00:00.000Z',
  ...extra,
});
const later = (hours: number): string => new Date(Date.now() + hours * 3_600_000).toISOString();

describe('one change', () => {
  it('is committed without its pending mark, live on the host that took it, and reported', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    await a.change(7000, rec(7000, '10.0.0.1:80'));
    const stored = etcd.value(7000);
    expect(stored?.pending).toBeUndefined();
    expect(stored?.by).toBe('a');
    expect(sameSpec(stored?.record as StreamRecord, rec(7000, '10.0.0.1:80'))).toBe(true);
    expect(a.local.get(7000)?.state).toBe('live');
    expect(a.cache.effective(7000)?.backends).toEqual([{ address: '10.0.0.1:80' }]);
    expect(JSON.parse(a.reports.get(7000) ?? '{}')).toMatchObject({ state: 'live', revision: String(etcd.revision) });
  });

  it('loses the compare-and-set when another host wrote the port since it read it: 409, nothing of it stored or served', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    const b = host(etcd, 'b');
    // Both read the port free, then both write it: the second write's guard no longer holds.
    const readByA = await a.writes.read(7001);
    const readByB = await b.writes.read(7001);
    await a.writes.write([{ port: 7001, current: readByA, next: rec(7001, '10.0.0.1:80') }], { kind: 'one' });
    await expect(
      b.writes.write([{ port: 7001, current: readByB, next: rec(7001, '10.0.0.2:80', { expiresAt: later(1) }) }], {
        kind: 'one',
      }),
    ).rejects.toMatchObject({ code: ErrorCode.Conflict, message: 'port 7001 was changed by another host meanwhile' });
    expect(etcd.value(7001)?.by).toBe('a');
    expect(b.local.get(7001)).toBeUndefined();
    // The loser's lease for its expiring stream is not left behind.
    await Promise.resolve();
    expect(etcd.leases.size).toBe(0);
  });

  it('answers a conflict when another host replaced the port while this one applied it, and follows the winner', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    const b = host(etcd, 'b');
    await a.change(7002, rec(7002, '10.0.0.1:80'));
    // While host a applies its replacement, host b's change to the same port is committed.
    let once = true;
    a.local.during = () => {
      if (!once) return;
      once = false;
      etcd.put(`${PREFIX}streams/7002`, JSON.stringify({ record: rec(7002, '10.0.0.3:80'), by: 'b', op: 'other' }));
    };
    await expect(a.change(7002, rec(7002, '10.0.0.2:80'))).rejects.toMatchObject({
      code: ErrorCode.Conflict,
      message: 'port 7002 was changed by another host while this one applied it',
    });
    expect(etcd.value(7002)?.record?.backends).toEqual([{ address: '10.0.0.3:80' }]);
    // Host a goes to what the fleet holds now, once its cache has seen it.
    await b.writes.read(7002);
    await a.writes.read(7002);
    await a.convergence.converge(7002);
    expect(a.local.get(7002)?.backends).toEqual([{ address: '10.0.0.3:80' }]);
  });

  it('recognizes its own pending write when the client retried a transaction etcd had taken', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    const current = await a.writes.read(7003);
    // The first transaction is taken, its answer lost; the client's retry finds the key changed.
    const txn = etcd.txn.bind(etcd);
    let first = true;
    etcd.txn = async (compares, steps) => {
      if (!first) return txn(compares, steps);
      first = false;
      await txn(compares, steps);
      return txn(compares, steps);
    };
    await a.writes.write([{ port: 7003, current, next: rec(7003, '10.0.0.1:80') }], { kind: 'one' });
    expect(etcd.value(7003)?.pending).toBeUndefined();
    expect(a.local.get(7003)?.state).toBe('live');
  });
});

describe('a host that refuses the change', () => {
  it("answers the host's own refusal and leaves the fleet as it was: a new port stays free", async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    const b = host(etcd, 'b');
    const seenByB: unknown[] = [];
    // What the other hosts would take from the store while the change is pending: the state before.
    a.local.during = () => {
      const kv = etcd.keys.get(`${PREFIX}streams/7010`);
      if (kv) b.cache.take('put', kv);
      seenByB.push(b.cache.effective(7010));
    };
    a.local.refuse.set(7010, new ConductorError(ErrorCode.PortInUse, 'port 7010 is in use by another process'));
    await expect(a.change(7010, rec(7010, '10.0.0.1:80', { expiresAt: later(1) }))).rejects.toMatchObject({
      code: ErrorCode.PortInUse,
    });
    expect(seenByB).toEqual([undefined]);
    expect(etcd.keys.has(`${PREFIX}streams/7010`)).toBe(false);
    expect(a.local.get(7010)).toBeUndefined();
    await Promise.resolve();
    expect(etcd.leases.size).toBe(0);
  });

  it('puts the stream that was there back, and the other hosts keep serving it throughout', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    const b = host(etcd, 'b');
    await b.change(7011, rec(7011, '10.0.0.1:80'));
    a.local.during = () => {
      const kv = etcd.keys.get(`${PREFIX}streams/7011`);
      if (kv) b.cache.take('put', kv);
      expect(b.cache.effective(7011)?.backends).toEqual([{ address: '10.0.0.1:80' }]);
    };
    a.local.refuse.set(7011, new ConductorError(ErrorCode.NginxRejected, 'no-such-host.invalid does not resolve'));
    await expect(a.change(7011, rec(7011, 'no-such-host.invalid:80'))).rejects.toMatchObject({
      code: ErrorCode.NginxRejected,
    });
    expect(etcd.value(7011)?.pending).toBeUndefined();
    expect(etcd.value(7011)?.record?.backends).toEqual([{ address: '10.0.0.1:80' }]);
  });

  it('says the fleet store did not take the refused change back when etcd stops answering, and the pending value still means the state before', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    const b = host(etcd, 'b');
    await b.change(7012, rec(7012, '10.0.0.1:80'));
    a.local.refuse.set(7012, new ConductorError(ErrorCode.NginxRejected, 'refused here'));
    // Step 1 is taken; every try of step 3 fails.
    a.local.during = () =>
      etcd.failures.push({ call: 'txn', error: new Error('14 UNAVAILABLE: no connection'), times: 3 });
    await expect(a.change(7012, rec(7012, '10.0.0.2:80'))).rejects.toMatchObject({
      code: ErrorCode.StoreUnavailable,
      message: 'this host refused the change (refused here), and the fleet store did not take it back',
    });
    const all = await etcd.getPrefix(PREFIX);
    b.cache.takeAll(all.kvs, all.revision);
    expect(etcd.value(7012)?.pending).toBeDefined();
    expect(b.cache.effective(7012)?.backends).toEqual([{ address: '10.0.0.1:80' }]);
  });
});

describe('a host that cannot run what it took', () => {
  it('commits the change, keeps the failure to try again, and reports it to the fleet', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    a.local.holdFailed.set(7015, 'nginx could not bind 10.0.0.1');
    await a.change(7015, rec(7015, '10.0.0.1:80'));
    expect(etcd.value(7015)?.pending).toBeUndefined();
    expect(a.convergence.failures.get(7015)).toBe('nginx could not bind 10.0.0.1');
    expect(JSON.parse(a.reports.get(7015) ?? '{}')).toMatchObject({
      state: 'failed',
      reason: 'nginx could not bind 10.0.0.1',
    });
  });

  it("shows another host's failure report on the stream, and a report about an older revision as pending", async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    await a.change(7016, rec(7016, '10.0.0.1:80'));
    const revision = a.cache.desired.get(7016)?.modRevision as string;
    const views = new FleetViews({ cache: a.cache, local: a.local, hostId: 'a', failures: a.convergence.failures });
    const report = (text: string): void => {
      a.cache.take('put', { key: `${PREFIX}applied/b/7016`, value: text, modRevision: '0', lease: '0' });
    };
    report(JSON.stringify({ state: 'failed', reason: 'port in use', revision }));
    expect(views.get(7016)?.hosts).toEqual([
      { host: 'a', state: 'live' },
      { host: 'b', state: 'failed', reason: 'port in use' },
    ]);
    report(JSON.stringify({ state: 'live', revision: String(BigInt(revision) - 1n) }));
    expect(views.get(7016)?.hosts?.[1]).toEqual({ host: 'b', state: 'pending' });
    // A host whose registration ended takes its reports with it.
    expect(a.cache.take('delete', { key: `${PREFIX}hosts/b`, value: '', modRevision: '0', lease: '0' })).toEqual({
      kind: 'host-gone',
      id: 'b',
    });
    expect(views.get(7016)?.hosts).toEqual([{ host: 'a', state: 'live' }]);
  });
  it("keeps what this host saw of the stream's TLS handshakes with its backends in the fleet's view", async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    await a.change(7017, rec(7017, '10.0.0.1:80'));
    const failures = {
      count: 2,
      reasons: { untrusted: 2 },
      last: {
        at: '2026-12-06T03:23:05.000Z',
        reason: 'untrusted' as const,
        message: 'certificate verify error 21: unable to verify the first certificate',
        backend: '10.0.0.1:80',
        client: '127.0.0.1',
      },
    };
    const here = a.local.streams.get(7017) as StreamView;
    a.local.streams.set(7017, { ...here, backendTlsFailures: failures });
    const views = new FleetViews({ cache: a.cache, local: a.local, hostId: 'a', failures: a.convergence.failures });
    expect(views.get(7017)).toMatchObject({ state: 'live', backendTlsFailures: failures });
    expect(views.list().find((view) => view.port === 7017)?.backendTlsFailures).toEqual(failures);
  });
});

describe('a removal as the listing shows it', () => {
  it('is never shown live: removing on the host that takes it while it runs, and on another until that host has removed it', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    const b = host(etcd, 'b');
    const viewsOf = (one: typeof a): FleetViews =>
      new FleetViews({
        cache: one.cache,
        local: one.local,
        hostId: 'a',
        failures: one.convergence.failures,
        removing: (port) => one.convergence.removing(port),
      });
    await a.change(7030, rec(7030, '10.0.0.1:80'));
    await b.writes.read(7030);
    await b.convergence.converge(7030);
    expect(viewsOf(b).get(7030)?.state).toBe('live');
    // Host a's own removal closes its ports before the fleet's key goes.
    const seenByA: unknown[] = [];
    a.local.duringRemove = (port) => {
      const view = viewsOf(a).get(port);
      seenByA.push([view?.state, view?.reason]);
    };
    await a.change(7030, null);
    expect(seenByA).toEqual([['removing', 'this host is removing it']]);
    expect(viewsOf(a).get(7030)).toBeUndefined();
    // Host b has seen the key go but not removed its own stream yet (its ports may be closing).
    await b.writes.read(7030);
    expect(b.cache.effective(7030)).toBeUndefined();
    const views = viewsOf(b);
    expect(views.get(7030)).toMatchObject({ state: 'removing', reason: "not in the fleet's set: being removed" });
    expect(views.list().map(({ port, state }) => ({ port, state }))).toEqual([{ port: 7030, state: 'removing' }]);
    // A removal that fails is shown failed, with the reason.
    b.convergence.failures.set(7030, 'could not remove it: nginx did not answer');
    expect(views.get(7030)).toMatchObject({ state: 'failed', reason: 'could not remove it: nginx did not answer' });
    b.convergence.failures.delete(7030);
    await b.convergence.converge(7030);
    expect(views.get(7030)).toBeUndefined();
  });
});

describe('a pending value left behind', () => {
  it('stands for the state before when its writer is gone, so a change may write over it', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    const pending = (by: string) =>
      JSON.stringify({
        record: rec(7017, '10.0.0.9:80'),
        by,
        op: 'x',
        pending: { previous: null, remove: false, at: new Date().toISOString() },
      });
    etcd.put(`${PREFIX}streams/7017`, pending('b'));
    // Its writer is up and the write is fresh: it stands for what it writes.
    expect(a.writes.standing(await a.writes.read(7017))?.backends).toEqual([{ address: '10.0.0.9:80' }]);
    etcd.put(`${PREFIX}streams/7017`, pending('gone'));
    expect(a.writes.standing(await a.writes.read(7017))).toBeNull();
    await a.change(7017, rec(7017, '10.0.0.1:80'));
    expect(etcd.value(7017)?.by).toBe('a');
    expect(a.local.get(7017)?.backends).toEqual([{ address: '10.0.0.1:80' }]);
  });
});

describe('leases', () => {
  it('puts the state before back without its lease when that lease ended meanwhile', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    await a.change(7020, rec(7020, '10.0.0.1:80', { expiresAt: later(1) }));
    const old = etcd.keys.get(`${PREFIX}streams/7020`)?.lease as string;
    expect(etcd.leases.has(old)).toBe(true);
    // The pending replacement stands on its own lease; the old one ends while the host applies.
    a.local.during = () => {
      etcd.leases.delete(old);
    };
    a.local.refuse.set(7020, new ConductorError(ErrorCode.NginxRejected, 'refused here'));
    await expect(a.change(7020, rec(7020, '10.0.0.2:80', { expiresAt: later(2) }))).rejects.toMatchObject({
      code: ErrorCode.NginxRejected,
    });
    const kv = etcd.keys.get(`${PREFIX}streams/7020`);
    expect(kv?.lease).toBe('0');
    expect(etcd.value(7020)?.record?.backends).toEqual([{ address: '10.0.0.1:80' }]);
  });

  it('moves a renewed stream to its new lease and revokes the old one', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    await a.change(7021, rec(7021, '10.0.0.1:80', { expiresAt: later(1) }));
    await a.change(7021, rec(7021, '10.0.0.1:80', { expiresAt: later(2) }));
    await Promise.resolve();
    expect([...etcd.leases]).toEqual([etcd.keys.get(`${PREFIX}streams/7021`)?.lease]);
    await a.change(7021, null);
    await Promise.resolve();
    expect(etcd.leases.size).toBe(0);
    expect(etcd.keys.has(`${PREFIX}streams/7021`)).toBe(false);
    expect(a.local.get(7021)).toBeUndefined();
  });

  it('commits a renewal whose old lease ends while the host applies it (its pending value is on the new lease)', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    await a.change(7024, rec(7024, '10.0.0.1:80', { expiresAt: later(1) }));
    const old = etcd.keys.get(`${PREFIX}streams/7024`)?.lease as string;
    a.local.during = () => etcd.expire(old);
    await a.change(7024, rec(7024, '10.0.0.1:80', { expiresAt: later(2) }));
    expect(etcd.value(7024)?.pending).toBeUndefined();
    expect(etcd.keys.get(`${PREFIX}streams/7024`)?.lease).not.toBe(old);
    expect(a.local.get(7024)?.state).toBe('live');
  });

  it('keeps a stream that does not expire when its replacement by an expiring one is left pending and the new lease ends', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    const b = host(etcd, 'b');
    await a.change(7022, rec(7022, '10.0.0.1:80'));
    // Step 1 is taken; every try of step 3 fails: the pending value stays, standing for the stream before.
    a.local.during = () =>
      etcd.failures.push({ call: 'txn', error: new Error('14 UNAVAILABLE: no connection'), times: 3 });
    await expect(a.change(7022, rec(7022, '10.0.0.2:80', { expiresAt: later(1) }))).rejects.toMatchObject({
      code: ErrorCode.StoreUnavailable,
    });
    // The lease granted for the replacement ends (it was never committed): the stream before stays.
    expect(etcd.leases.size).toBe(1);
    for (const lease of [...etcd.leases]) etcd.expire(lease);
    expect(etcd.value(7022)?.pending).toBeDefined();
    const all = await etcd.getPrefix(PREFIX);
    b.cache.takeAll(all.kvs, all.revision);
    expect(b.cache.effective(7022)?.backends).toEqual([{ address: '10.0.0.1:80' }]);
  });

  it('does not revoke the lease the pending value of a refused renewal stands on when etcd did not take it back', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    const b = host(etcd, 'b');
    await a.change(7023, rec(7023, '10.0.0.1:80', { expiresAt: later(1) }));
    a.local.refuse.set(7023, new ConductorError(ErrorCode.NginxRejected, 'refused here'));
    // Step 1 is taken; every try of step 3 fails.
    a.local.during = () =>
      etcd.failures.push({ call: 'txn', error: new Error('14 UNAVAILABLE: no connection'), times: 3 });
    await expect(a.change(7023, rec(7023, '10.0.0.2:80', { expiresAt: later(2) }))).rejects.toMatchObject({
      code: ErrorCode.StoreUnavailable,
      message: 'this host refused the change (refused here), and the fleet store did not take it back',
    });
    await Promise.resolve();
    // The pending value still stands for the stream before, until that stream's own expiry.
    expect(etcd.value(7023)?.pending).toBeDefined();
    const all = await etcd.getPrefix(PREFIX);
    b.cache.takeAll(all.kvs, all.revision);
    expect(b.cache.effective(7023)?.backends).toEqual([{ address: '10.0.0.1:80' }]);
  });
});

describe('a drain', () => {
  const key = `${PREFIX}streams/7050`;

  it('puts the draining stream on a lease that ends just after its deadline, drains it here, and a cancel takes it back for good', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    await a.change(7050, rec(7050, '10.0.0.1:80'));
    expect(etcd.keys.get(key)?.lease).toBe('0');
    const until = new Date(Date.now() + 60_000).toISOString();
    await a.change(7050, rec(7050, '10.0.0.1:80', { drainingUntil: until }));
    const lease = etcd.keys.get(key)?.lease ?? '0';
    expect(lease).not.toBe('0');
    // Its deadline plus a few seconds (each host cuts at the deadline, then etcd drops the key).
    expect(etcd.granted.get(lease)).toBeGreaterThanOrEqual(64);
    expect(etcd.granted.get(lease)).toBeLessThanOrEqual(66);
    expect(a.local.get(7050)).toMatchObject({ state: 'draining', drainingUntil: until });
    expect(JSON.parse(a.reports.get(7050) ?? '{}')).toMatchObject({ state: 'draining' });
    await a.change(7050, rec(7050, '10.0.0.1:80'));
    await Promise.resolve();
    expect(etcd.keys.get(key)?.lease).toBe('0');
    expect(etcd.leases.size).toBe(0);
    expect(a.local.get(7050)?.state).toBe('live');
    expect(a.local.get(7050)).not.toHaveProperty('drainingUntil');
  });

  it('ends on the lease of its expiry when that comes first', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    const expiresAt = new Date(Date.now() + 30_000).toISOString();
    await a.change(7050, rec(7050, '10.0.0.1:80', { expiresAt }));
    await a.change(7050, rec(7050, '10.0.0.1:80', { expiresAt, drainingUntil: expiresAt }));
    expect(etcd.granted.get(etcd.keys.get(key)?.lease ?? '0')).toBeLessThanOrEqual(30);
  });

  it('removes the key once every host reported it drained at its revision, and not before', async () => {
    const etcd = new FakeEtcd();
    const asked: string[] = [];
    const a = host(etcd, 'a', async (port, revision) => {
      asked.push(revision);
      await a.writes.removeIfUnchanged(port, revision);
    });
    await a.change(7050, rec(7050, '10.0.0.1:80'));
    const older = etcd.keys.get(key)?.modRevision ?? '0';
    await a.change(7050, rec(7050, '10.0.0.1:80', { drainingUntil: new Date(Date.now() + 60_000).toISOString() }));
    const revision = etcd.keys.get(key)?.modRevision ?? '0';
    const report = (id: string, state: 'draining' | 'drained', at: string): void => {
      a.cache.applied.set(id, new Map([[7050, { state, revision: at }]]));
    };
    const look = async (): Promise<void> => {
      a.convergence.checkLocal();
      await new Promise((done) => setImmediate(done));
    };
    a.local.streams.delete(7050); // this host's own drain ended
    report('a', 'drained', revision);
    report('b', 'draining', revision);
    await look();
    // A report about the stream before the drain does not count.
    report('b', 'drained', older);
    await look();
    expect(asked).toEqual([]);
    expect(etcd.keys.has(key)).toBe(true);
    report('b', 'drained', revision);
    await look();
    expect(asked).toEqual([revision]);
    expect(etcd.keys.has(key)).toBe(false);
  });

  it('leaves a key that changed since every host reported it drained', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    await a.change(7050, rec(7050, '10.0.0.1:80', { drainingUntil: new Date(Date.now() + 60_000).toISOString() }));
    const revision = etcd.keys.get(key)?.modRevision ?? '0';
    etcd.put(key, JSON.stringify({ record: rec(7050, '10.0.0.2:80'), by: 'b', op: 'x' }));
    expect(await a.writes.removeIfUnchanged(7050, revision)).toBe(false);
    expect(etcd.value(7050)?.record?.backends).toEqual([{ address: '10.0.0.2:80' }]);
  });
});

describe("another host's change under way", () => {
  it('is not written over: the later change is refused, and the first keeps its key and its lease', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    const b = host(etcd, 'b');
    await a.change(7080, rec(7080, '10.0.0.1:80', { expiresAt: later(1) }));
    // While a applies its renewal (pending, on a new lease), b asks for a replace of the port.
    let asked: Promise<unknown> | undefined;
    a.local.during = async () => {
      a.local.during = undefined;
      let settled = false;
      asked = b
        .change(7080, rec(7080, '10.0.0.2:80', { expiresAt: later(3) }))
        .catch((error: unknown) => error)
        .finally(() => {
          settled = true;
        });
      // a goes on once b has either been refused or put its own pending value over a's.
      for (let i = 0; i < 100 && !settled && (etcd.value(7080) as { by?: string }).by !== 'b'; i += 1)
        await new Promise((done) => setImmediate(done));
    };
    await a.change(7080, rec(7080, '10.0.0.1:80', { expiresAt: later(2) }));
    const refusal = await asked;
    const kv = etcd.keys.get(`${PREFIX}streams/7080`);
    expect(etcd.value(7080)?.record?.backends).toEqual([{ address: '10.0.0.1:80' }]);
    expect(etcd.value(7080)?.pending).toBeUndefined();
    expect(etcd.leases.has(kv?.lease ?? '')).toBe(true);
    expect(b.local.get(7080)).toBeUndefined();
    expect(refusal).toMatchObject({
      code: ErrorCode.Conflict,
      message: 'port 7080 is being changed through host a right now',
    });
  });
});

describe('a pending value another write left', () => {
  const key = `${PREFIX}streams/7090`;

  it("is not the lease of the state before: the stale writer's revocation takes nothing of the new write", async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    const b = host(etcd, 'b');
    await a.change(7090, rec(7090, '10.0.0.1:80', { expiresAt: later(1) }));
    const before = etcd.value(7090)?.record as StreamRecord;
    // Host z (not registered: its value is stale) left a renewal pending on its own new lease.
    const stale = await etcd.grantLease(7200);
    etcd.put(
      key,
      JSON.stringify({
        record: { ...before, expiresAt: later(2) },
        by: 'z',
        op: 'z1',
        pending: { previous: before, remove: false, at: new Date().toISOString() },
      }),
      stale,
    );
    // b shortens the stream's life; z comes back meanwhile, finds its commit superseded, and revokes its lease.
    b.local.during = () => {
      b.local.during = undefined;
      etcd.expire(stale);
    };
    await b.change(7090, rec(7090, '10.0.0.1:80', { expiresAt: later(0.5) }));
    expect(etcd.keys.has(key)).toBe(true);
    expect(etcd.value(7090)?.pending).toBeUndefined();
    expect(etcd.value(7090)?.record?.expiresAt).toBeDefined();
  });

  it("by this host and no longer being written does not hold this host's next change up", async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    await a.change(7090, rec(7090, '10.0.0.1:80'));
    a.local.refuse.set(7090, new ConductorError(ErrorCode.NginxRejected, 'refused here'));
    a.local.during = () => {
      a.local.during = undefined;
      etcd.failures.push({ call: 'txn', error: new Error('14 UNAVAILABLE: no connection'), times: 3 });
    };
    await expect(a.change(7090, rec(7090, '10.0.0.2:80'))).rejects.toMatchObject({ code: ErrorCode.StoreUnavailable });
    expect(etcd.value(7090)?.pending).toBeDefined();
    a.local.refuse.delete(7090);
    await a.change(7090, rec(7090, '10.0.0.3:80'));
    expect(etcd.value(7090)?.record?.backends).toEqual([{ address: '10.0.0.3:80' }]);
  });

  it('with a time that does not parse is stale, whoever wrote it', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    etcd.put(
      key,
      JSON.stringify({
        record: rec(7090, '10.0.0.1:80'),
        by: 'b',
        op: 'b1',
        pending: { previous: null, remove: false, at: 'not a time' },
      }),
    );
    expect(a.writes.changing(await a.writes.read(7090))).toBe(false);
  });
});

describe('a drain, as each host does its part', () => {
  const key = `${PREFIX}streams/7060`;
  const inAMinute = (): string => new Date(Date.now() + 60_000).toISOString();

  it("drains a host that had another definition to the fleet's deadline, and leaves one capped by its expiry as it is", async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    const until = inAMinute();
    // This host lagged: it drains an older definition, to another deadline.
    a.local.streams.set(7060, {
      ...rec(7060, '10.0.0.9:80'),
      state: 'draining',
      drainingUntil: new Date(Date.now() + 5_000).toISOString(),
    });
    etcd.put(key, JSON.stringify({ record: rec(7060, '10.0.0.1:80', { drainingUntil: until }), by: 'b', op: 'x' }));
    await a.writes.read(7060);
    await a.convergence.converge(7060);
    expect(a.local.get(7060)?.drainingUntil).toBe(until);
    // One whose expiry comes before the fleet's deadline drains to its expiry, and no more calls.
    const expiresAt = new Date(Date.now() + 20_000).toISOString();
    a.local.streams.set(7060, { ...rec(7060, '10.0.0.9:80', { expiresAt }), state: 'live' });
    await a.convergence.converge(7060);
    expect(a.local.get(7060)?.drainingUntil).toBe(expiresAt);
    const drains = a.local.drains;
    await a.convergence.converge(7060);
    a.convergence.checkLocal();
    await new Promise((done) => setImmediate(done));
    expect(a.local.drains).toBe(drains);
  });

  it('asks again to remove a drained stream whose removal failed', async () => {
    const etcd = new FakeEtcd();
    let calls = 0;
    const a = host(etcd, 'a', async (port, revision) => {
      calls += 1;
      if (calls === 1) throw new Error('etcd did not answer');
      await a.writes.removeIfUnchanged(port, revision);
    });
    await a.change(7060, rec(7060, '10.0.0.1:80', { drainingUntil: inAMinute() }));
    const revision = etcd.keys.get(key)?.modRevision ?? '0';
    a.local.streams.delete(7060);
    for (const id of ['a', 'b']) a.cache.applied.set(id, new Map([[7060, { state: 'drained', revision }]]));
    const look = async (): Promise<void> => {
      a.convergence.checkLocal();
      await new Promise((done) => setImmediate(done));
    };
    await look();
    expect(calls).toBe(1);
    expect(etcd.keys.has(key)).toBe(true);
    await look();
    expect(calls).toBe(2);
    expect(etcd.keys.has(key)).toBe(false);
  });

  it('takes a key whose drain is over for none, even under a cancel its writer left pending', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    const over = rec(7060, '10.0.0.1:80', { drainingUntil: new Date(Date.now() - 10_000).toISOString() });
    // Host z died between writing the cancel pending and committing it: the value stands for the drain.
    etcd.put(
      key,
      JSON.stringify({
        record: rec(7060, '10.0.0.1:80'),
        by: 'z',
        op: 'x',
        pending: { previous: over, remove: false, at: new Date().toISOString() },
      }),
    );
    const current = await a.writes.read(7060);
    expect(a.writes.standing(current)).toBeNull();
    expect(a.cache.effective(7060)).toBeUndefined();
    // A create takes the port.
    await a.writes.write([{ port: 7060, current, next: rec(7060, '10.0.0.2:80') }], { kind: 'one' });
    expect(etcd.value(7060)?.record?.backends).toEqual([{ address: '10.0.0.2:80' }]);
    expect(a.local.get(7060)?.state).toBe('live');
  });

  it('warns of each host that has not said its port refuses connections', () => {
    expect(drainWarning({ host: 'a', state: 'draining', openSessions: 2 }, 9000)).toEqual([]);
    expect(drainWarning({ host: 'a', state: 'drained' }, 9000)).toEqual([]);
    expect(drainWarning({ host: 'b', state: 'failed', reason: 'a change is under way' }, 9000)).toEqual([
      'host b could not drain port 9000, it may still take connections: a change is under way',
    ]);
    for (const state of ['live', 'pending'] as const)
      expect(drainWarning({ host: 'c', state }, 9000)).toEqual([
        `host c has not said its port 9000 refuses connections yet (${state}); it drains once it converges`,
      ]);
  });
});

describe('a host that has not read the fleet store yet', () => {
  it('lists what it serves as it is, not as being removed', () => {
    const keys = new FleetKeys(PREFIX);
    const cache = new DesiredCache(keys, () => new Date(), silentLogger);
    const local = new FakeLocal();
    local.streams.set(7070, { ...rec(7070, '10.0.0.1:80'), state: 'live' });
    const views = new FleetViews({ cache, local, hostId: 'a', failures: new Map() });
    expect(views.get(7070)).toMatchObject({ state: 'live', reason: "the fleet's store has not been read yet" });
    // Once it has read the set and the stream is not in it, it is on its way out.
    cache.rememberAll([], '5');
    expect(views.get(7070)?.state).toBe('removing');
  });
});

describe('a store that stops answering', () => {
  it('answers 503 before anything is written when etcd does not take the pending write', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    const current = await a.writes.read(7030);
    etcd.failures.push({ call: 'txn', error: new Error('14 UNAVAILABLE: no connection'), times: 1 });
    await expect(
      a.writes.write([{ port: 7030, current, next: rec(7030, '10.0.0.1:80') }], { kind: 'one' }),
    ).rejects.toMatchObject({ code: ErrorCode.StoreUnavailable });
    expect(etcd.keys.size).toBe(0);
    expect(a.local.get(7030)).toBeUndefined();
  });

  it('goes back to the state before when etcd does not take the commit', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    a.local.during = () =>
      etcd.failures.push({ call: 'txn', error: new Error('14 UNAVAILABLE: no connection'), times: 3 });
    await expect(a.change(7031, rec(7031, '10.0.0.1:80'))).rejects.toMatchObject({
      code: ErrorCode.StoreUnavailable,
      message: 'the fleet store (etcd) did not take the change of port 7031; this host went back to the state before',
    });
    // The pending value stands for the state before (none): this host does not serve it.
    expect(a.local.get(7031)).toBeUndefined();
  });
});

describe('a declarative set: the same protocol for many ports', () => {
  const set = (a: ReturnType<typeof host>, records: Array<[number, StreamRecord | null]>): Promise<string[]> =>
    a.writes.write(
      records.map(([port, next]): PortWrite => ({ port, current: a.cache.desired.get(port), next })),
      { kind: 'set' },
    );

  it('writes every port in one apply here and commits them together', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    await a.writes.readStreams();
    await set(a, [
      [7040, rec(7040, '10.0.0.1:80')],
      [7041, rec(7041, '10.0.0.2:80')],
    ]);
    expect(a.local.applies).toBe(1);
    expect([etcd.value(7040)?.pending, etcd.value(7041)?.pending]).toEqual([undefined, undefined]);
    expect(etcd.keys.get(`${PREFIX}streams/7040`)?.modRevision).toBe(
      etcd.keys.get(`${PREFIX}streams/7041`)?.modRevision,
    );
    expect(a.local.get(7041)?.state).toBe('live');
  });

  it('writes nothing when one port of it was changed by another host since the plan', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    const b = host(etcd, 'b');
    await a.writes.readStreams();
    await b.change(7043, rec(7043, '10.0.0.9:80'));
    await expect(
      set(a, [
        [7042, rec(7042, '10.0.0.1:80')],
        [7043, rec(7043, '10.0.0.2:80')],
      ]),
    ).rejects.toMatchObject({
      code: ErrorCode.Conflict,
      message: 'streams of the set were changed by another host meanwhile; nothing was applied',
    });
    expect(etcd.keys.has(`${PREFIX}streams/7042`)).toBe(false);
    expect(etcd.value(7043)?.record?.backends).toEqual([{ address: '10.0.0.9:80' }]);
    expect(a.local.applies).toBe(0);
  });

  it("answers the host's refusal and puts every port back when the host refuses one of them", async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    await a.change(7044, rec(7044, '10.0.0.1:80'));
    await a.writes.readStreams();
    a.local.refuse.set(7045, new ConductorError(ErrorCode.PortInUse, 'port 7045 is in use by another process'));
    await expect(
      set(a, [
        [7044, null],
        [7045, rec(7045, '10.0.0.2:80')],
      ]),
    ).rejects.toMatchObject({ code: ErrorCode.PortInUse });
    expect(etcd.value(7044)?.record?.backends).toEqual([{ address: '10.0.0.1:80' }]);
    expect(etcd.value(7044)?.pending).toBeUndefined();
    expect(etcd.keys.has(`${PREFIX}streams/7045`)).toBe(false);
    expect(a.local.get(7044)?.state).toBe('live');
  });

  it('answers 503 when etcd does not take the pending write of the set: nothing written, applied or leased', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    await a.change(7046, rec(7046, '10.0.0.1:80'));
    await a.writes.readStreams();
    const stored = etcd.keys.get(`${PREFIX}streams/7046`);
    etcd.failures.push({ call: 'txn', error: new Error('14 UNAVAILABLE: no connection'), times: 1 });
    await expect(
      set(a, [
        [7046, rec(7046, '10.0.0.2:80')],
        [7047, rec(7047, '10.0.0.3:80', { expiresAt: later(1) })],
      ]),
    ).rejects.toMatchObject({
      code: ErrorCode.StoreUnavailable,
      message: "the fleet's store (etcd) did not take the change: 14 UNAVAILABLE: no connection",
    });
    expect(etcd.keys.get(`${PREFIX}streams/7046`)).toEqual(stored);
    expect(etcd.keys.has(`${PREFIX}streams/7047`)).toBe(false);
    expect(a.local.applies).toBe(0);
    expect(a.local.get(7046)?.backends).toEqual([{ address: '10.0.0.1:80' }]);
    expect(a.local.get(7047)).toBeUndefined();
    // The lease granted for the expiring stream of the set is not left behind.
    await Promise.resolve();
    expect(etcd.leases.size).toBe(0);
  });

  it('answers 503 and goes back to the state before on every port, here and in the fleet, when etcd does not take the commit of the set', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    const b = host(etcd, 'b');
    await a.change(7048, rec(7048, '10.0.0.1:80'));
    await a.change(7049, rec(7049, '10.0.0.2:80'));
    await a.writes.readStreams();
    // Step 1 is taken; every try of step 3 fails.
    a.local.duringApply = () =>
      etcd.failures.push({ call: 'txn', error: new Error('14 UNAVAILABLE: no connection'), times: 3 });
    // 503, as for a single change: etcd did not answer, no other host wrote.
    await expect(
      set(a, [
        [7048, rec(7048, '10.0.0.3:80')],
        [7049, null],
        [7050, rec(7050, '10.0.0.4:80')],
      ]),
    ).rejects.toMatchObject({
      code: ErrorCode.StoreUnavailable,
      message: 'the fleet store (etcd) did not take the apply; this host went back to the state before',
    });
    expect(a.local.applies).toBe(1);
    // This host serves the state before again: the replaced stream, the removed one, not the new one.
    expect(a.local.get(7048)).toMatchObject({ state: 'live', backends: [{ address: '10.0.0.1:80' }] });
    expect(a.local.get(7049)).toMatchObject({ state: 'live', backends: [{ address: '10.0.0.2:80' }] });
    expect(a.local.get(7050)).toBeUndefined();
    // The pending values etcd kept stand for the state before for the other hosts too.
    expect(etcd.value(7048)?.pending).toBeDefined();
    const all = await etcd.getPrefix(PREFIX);
    b.cache.takeAll(all.kvs, all.revision);
    expect(b.cache.effective(7048)?.backends).toEqual([{ address: '10.0.0.1:80' }]);
    expect(b.cache.effective(7049)?.backends).toEqual([{ address: '10.0.0.2:80' }]);
    expect(b.cache.effective(7050)).toBeUndefined();
  });

  it('answers a conflict when another host replaced one port of the set while this one applied it, and follows the winner', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    const b = host(etcd, 'b');
    await a.change(7051, rec(7051, '10.0.0.1:80'));
    await a.writes.readStreams();
    // While host a applies the set, host b's change to one of its ports is committed.
    a.local.duringApply = () =>
      etcd.put(`${PREFIX}streams/7051`, JSON.stringify({ record: rec(7051, '10.0.0.9:80'), by: 'b', op: 'other' }));
    await expect(
      set(a, [
        [7051, rec(7051, '10.0.0.2:80')],
        [7052, rec(7052, '10.0.0.3:80')],
      ]),
    ).rejects.toMatchObject({
      code: ErrorCode.Conflict,
      message: 'streams of the set were changed by another host while this one applied them',
    });
    expect(a.local.applies).toBe(1);
    expect(etcd.value(7051)).toMatchObject({
      by: 'b',
      op: 'other',
      record: { backends: [{ address: '10.0.0.9:80' }] },
    });
    // Host a goes to what the fleet holds now: the winner, and none of the rest of the set.
    expect(a.local.get(7051)).toMatchObject({ state: 'live', backends: [{ address: '10.0.0.9:80' }] });
    expect(a.local.get(7052)).toBeUndefined();
    const all = await etcd.getPrefix(PREFIX);
    b.cache.takeAll(all.kvs, all.revision);
    expect(b.cache.effective(7051)?.backends).toEqual([{ address: '10.0.0.9:80' }]);
    expect(b.cache.effective(7052)).toBeUndefined();
  });

  it('takes its pending values back from the ports of the set nobody else touched when another host replaced one of them meanwhile', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    const b = host(etcd, 'b');
    await a.change(7060, rec(7060, '10.0.0.1:80'));
    await a.change(7061, rec(7061, '10.0.0.2:80'));
    await a.change(7062, rec(7062, '10.0.0.3:80'));
    await a.writes.readStreams();
    a.local.duringApply = () =>
      etcd.put(`${PREFIX}streams/7060`, JSON.stringify({ record: rec(7060, '10.0.0.9:80'), by: 'b', op: 'other' }));
    await expect(
      set(a, [
        [7060, rec(7060, '10.0.0.4:80')],
        [7061, rec(7061, '10.0.0.5:80')],
        [7062, null],
        [7063, rec(7063, '10.0.0.6:80', { expiresAt: later(1) })],
      ]),
    ).rejects.toMatchObject({
      code: ErrorCode.Conflict,
      message: 'streams of the set were changed by another host while this one applied them',
    });
    expect(etcd.value(7060)).toMatchObject({ by: 'b', op: 'other' });
    // The other ports are as before the set in etcd: no pending value of it is left there.
    expect(etcd.value(7061)?.pending).toBeUndefined();
    expect(etcd.value(7061)?.record?.backends).toEqual([{ address: '10.0.0.2:80' }]);
    expect(etcd.value(7062)?.pending).toBeUndefined();
    expect(etcd.value(7062)?.record?.backends).toEqual([{ address: '10.0.0.3:80' }]);
    expect(etcd.keys.has(`${PREFIX}streams/7063`)).toBe(false);
    // Another host sees the new port free at once (a fresh pending create would stand for its stream).
    expect(b.writes.standing(await b.writes.read(7063))).toBeNull();
    // Host a serves what etcd holds.
    expect(a.local.get(7060)?.backends).toEqual([{ address: '10.0.0.9:80' }]);
    expect(a.local.get(7061)?.backends).toEqual([{ address: '10.0.0.2:80' }]);
    expect(a.local.get(7062)?.backends).toEqual([{ address: '10.0.0.3:80' }]);
    expect(a.local.get(7063)).toBeUndefined();
    // The lease granted for the set's expiring stream is revoked with it.
    await Promise.resolve();
    expect(etcd.leases.size).toBe(0);
  });

  it("answers the host's refusal and puts back the ports nobody else touched when another host replaced one port of the refused set meanwhile", async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    const b = host(etcd, 'b');
    await a.change(7067, rec(7067, '10.0.0.1:80'));
    await a.writes.readStreams();
    a.local.duringApply = () =>
      etcd.put(`${PREFIX}streams/7067`, JSON.stringify({ record: rec(7067, '10.0.0.9:80'), by: 'b', op: 'other' }));
    a.local.refuse.set(7068, new ConductorError(ErrorCode.PortInUse, 'port 7068 is in use by another process'));
    await expect(
      set(a, [
        [7067, rec(7067, '10.0.0.2:80')],
        [7068, rec(7068, '10.0.0.3:80')],
      ]),
    ).rejects.toMatchObject({ code: ErrorCode.PortInUse });
    expect(etcd.value(7067)).toMatchObject({ by: 'b', op: 'other' });
    expect(etcd.keys.has(`${PREFIX}streams/7068`)).toBe(false);
    expect(b.writes.standing(await b.writes.read(7068))).toBeNull();
    expect(a.local.get(7067)?.backends).toEqual([{ address: '10.0.0.9:80' }]);
    expect(a.local.get(7068)).toBeUndefined();
  });

  it('commits a set whose removal of an expiring stream found the key gone with its lease, as a single removal is', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    await a.change(7064, rec(7064, '10.0.0.1:80', { expiresAt: later(1) }));
    await a.change(7065, rec(7065, '10.0.0.2:80'));
    const lease = etcd.keys.get(`${PREFIX}streams/7064`)?.lease as string;
    await a.writes.readStreams();
    // The removal's pending value stays on the stream's lease, which ends while the host applies the set.
    a.local.duringApply = () => etcd.expire(lease);
    await set(a, [
      [7064, null],
      [7065, rec(7065, '10.0.0.3:80')],
      [7066, rec(7066, '10.0.0.4:80')],
    ]);
    expect(etcd.keys.has(`${PREFIX}streams/7064`)).toBe(false);
    expect([etcd.value(7065)?.pending, etcd.value(7066)?.pending]).toEqual([undefined, undefined]);
    expect(etcd.value(7065)?.record?.backends).toEqual([{ address: '10.0.0.3:80' }]);
    expect(etcd.value(7066)?.record?.backends).toEqual([{ address: '10.0.0.4:80' }]);
    expect(a.local.get(7064)).toBeUndefined();
    expect(a.local.get(7065)).toMatchObject({ state: 'live', backends: [{ address: '10.0.0.3:80' }] });
    expect(a.local.get(7066)?.state).toBe('live');
  });

  it('commits a set this host took but cannot run all of, keeps the failure to try again and reports it', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    await a.writes.readStreams();
    a.local.holdFailed.set(7054, 'nginx could not bind 10.0.0.5');
    await set(a, [
      [7053, rec(7053, '10.0.0.4:80')],
      [7054, rec(7054, '10.0.0.5:80')],
    ]);
    expect(a.local.applies).toBe(1);
    expect([etcd.value(7053)?.pending, etcd.value(7054)?.pending]).toEqual([undefined, undefined]);
    expect(etcd.value(7054)?.record?.backends).toEqual([{ address: '10.0.0.5:80' }]);
    expect(a.convergence.failures.get(7054)).toBe('nginx could not bind 10.0.0.5');
    expect(a.convergence.failures.has(7053)).toBe(false);
    const revision = etcd.keys.get(`${PREFIX}streams/7054`)?.modRevision;
    expect(JSON.parse(a.reports.get(7054) ?? '{}')).toEqual({
      state: 'failed',
      reason: 'nginx could not bind 10.0.0.5',
      revision,
    });
    expect(JSON.parse(a.reports.get(7053) ?? '{}')).toEqual({ state: 'live', revision });
  });

  it('moves a renewed port of the set to its new lease, gives a new expiring stream its own, and revokes the old lease', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    await a.change(7055, rec(7055, '10.0.0.1:80', { expiresAt: later(1) }));
    const old = etcd.keys.get(`${PREFIX}streams/7055`)?.lease as string;
    expect(etcd.leases.has(old)).toBe(true);
    await a.writes.readStreams();
    await set(a, [
      [7055, rec(7055, '10.0.0.1:80', { expiresAt: later(2) })],
      [7056, rec(7056, '10.0.0.2:80', { expiresAt: later(1) })],
      [7057, rec(7057, '10.0.0.3:80')],
    ]);
    await Promise.resolve();
    const leaseOf = (port: number): string | undefined => etcd.keys.get(`${PREFIX}streams/${port}`)?.lease;
    expect(leaseOf(7055)).not.toBe(old);
    expect(leaseOf(7057)).toBe('0');
    expect([...etcd.leases].sort()).toEqual([leaseOf(7055), leaseOf(7056)].sort());
    // The end of the new stream's lease removes it, and nothing else of the set.
    etcd.expire(leaseOf(7056) as string);
    expect([7055, 7056, 7057].map((port) => etcd.keys.has(`${PREFIX}streams/${port}`))).toEqual([true, false, true]);
  });

  it('puts every port of a refused set back, without the lease that ended meanwhile', async () => {
    const etcd = new FakeEtcd();
    const a = host(etcd, 'a');
    await a.change(7058, rec(7058, '10.0.0.1:80', { expiresAt: later(1) }));
    const old = etcd.keys.get(`${PREFIX}streams/7058`)?.lease as string;
    await a.writes.readStreams();
    // The pending values stand on the set's new leases; the old one ends while the host applies.
    a.local.duringApply = () => {
      etcd.leases.delete(old);
    };
    a.local.refuse.set(7059, new ConductorError(ErrorCode.NginxRejected, 'refused here'));
    await expect(
      set(a, [
        [7058, rec(7058, '10.0.0.2:80', { expiresAt: later(2) })],
        [7059, rec(7059, '10.0.0.3:80', { expiresAt: later(1) })],
      ]),
    ).rejects.toMatchObject({ code: ErrorCode.NginxRejected, message: 'refused here' });
    const kv = etcd.keys.get(`${PREFIX}streams/7058`);
    expect(kv?.lease).toBe('0');
    expect(etcd.value(7058)?.pending).toBeUndefined();
    expect(etcd.value(7058)?.record?.backends).toEqual([{ address: '10.0.0.1:80' }]);
    expect(etcd.keys.has(`${PREFIX}streams/7059`)).toBe(false);
    expect(a.local.get(7058)?.backends).toEqual([{ address: '10.0.0.1:80' }]);
    // The leases granted for the set are revoked with it.
    await Promise.resolve();
    expect(etcd.leases.size).toBe(0);
  });
});
