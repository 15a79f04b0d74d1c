/**
 * The change transaction step by step against fakes that write a journal: the plan it makes, and
 * each rollback (files back, store back, nginx back) for each step that can refuse.
 */
import { beforeEach, describe, expect, it } from '@jest/globals';
import { ErrorCode, type StreamRecord, simpleSpec } from '@stream-conductor/shared';
import { silentLogger } from '../src/log.js';
import type { TestResult } from '../src/nginx/binary.js';
import { InstanceState } from '../src/nginx/pipeline/state.js';
import { ChangeTransaction, planChange } from '../src/nginx/pipeline/transaction.js';
import type { Accepted, Entry } from '../src/nginx/pipeline/types.js';
import type { ReloadOutcome } from '../src/nginx/process/controller.js';
import type { FileSnapshot, FolderScan, StreamFileSet } from '../src/nginx/stream-files.js';
import type { StoreChange, StoreLoad, StreamStore } from '../src/streams/store.js';
import { QuietNginx } from './fake-nginx.js';

let journal: string[];

const record = (port: number, backend = `127.0.0.1:${port + 1000}`): StreamRecord => ({
  ...simpleSpec(port, backend),
  createdAt: '2026-01-01T00:00:00.000Z',
});
const live = (port: number, backend?: string): Entry => ({ record: record(port, backend), state: 'live' });
const change = (port: number, next: Entry | undefined): Accepted => ({
  item: { mutation: { kind: 'put', record: record(port) }, resolve: () => undefined, reject: () => undefined },
  port,
  next,
  change: next ? 'created' : 'removed',
});

/** Files kept in memory; `failApply` makes the next write fail like a full disk. */
class MemoryFiles implements StreamFileSet {
  readonly folder = '/srv/stream.d';
  texts = new Map<number, string>();
  failApply = false;

  portAt(path: string): number | undefined {
    const match = /_conductor_([0-9]+)\.conf$/.exec(path);
    return match ? Number(match[1]) : undefined;
  }
  async snapshot(ports: Iterable<number>): Promise<FileSnapshot> {
    return new Map([...ports].map((port) => [port, this.texts.get(port)]));
  }
  async apply(write: StreamRecord[], remove: number[]): Promise<void> {
    journal.push(`files.apply ${write.map((one) => one.port).join(',')} -${remove.join(',')}`);
    if (this.failApply) throw Object.assign(new Error('no space'), { code: 'ENOSPC' });
    for (const one of write) this.texts.set(one.port, one.backends.map((backend) => backend.address).join(' '));
    for (const port of remove) this.texts.delete(port);
  }
  async restore(snapshot: FileSnapshot): Promise<void> {
    journal.push('files.restore');
    for (const [port, text] of snapshot) {
      if (text === undefined) this.texts.delete(port);
      else this.texts.set(port, text);
    }
  }
  async scan(): Promise<FolderScan> {
    return { ours: [...this.texts.keys()], legacy: [], temporary: [] };
  }
  async removeTemporary(): Promise<void> {}
}

class JournalStore implements StreamStore {
  failNext = false;
  async load(): Promise<StoreLoad> {
    return { records: [], problems: [] };
  }
  async commit(change: StoreChange): Promise<void> {
    journal.push(`store.commit ${change.put.map((one) => one.port).join(',')} -${change.remove.join(',')}`);
    if (this.failNext) {
      this.failNext = false;
      throw Object.assign(new Error('read-only'), { code: 'EROFS' });
    }
  }
}

/** An nginx that answers what it is told to: each reload takes the next of `reloads` (ok when none is left). */
class FakeNginx extends QuietNginx {
  readonly mode = 'managed' as const;
  reloads: ReloadOutcome[] = [];
  testAnswer: TestResult = { ok: true, lines: [], message: '' };

  async test(): Promise<TestResult> {
    journal.push('nginx.test');
    return this.testAnswer;
  }
  async reload(options?: { urgent?: boolean }): Promise<ReloadOutcome> {
    journal.push(`nginx.reload${options?.urgent ? ' urgent' : ''}`);
    return this.reloads.shift() ?? { ok: true, message: '', lines: [], previousWorkers: [] };
  }
}

let files: MemoryFiles;
let store: JournalStore;
let nginx: FakeNginx;
let state: InstanceState;

beforeEach(() => {
  journal = [];
  files = new MemoryFiles();
  store = new JournalStore();
  nginx = new FakeNginx();
  state = new InstanceState({
    id: 0,
    controller: nginx,
    files,
    store,
    probePort: async () => 'free',
    listeningPorts: async () => ({ tcp: new Set([...files.texts.keys()]), udp: new Set<number>() }),
    log: silentLogger,
    verifyTimeoutMs: 100,
  });
  state.entries.set(9000, live(9000));
  files.texts.set(9000, '127.0.0.1:10000');
});

describe('planChange', () => {
  it('tells opened, closed and in-place ports apart, and store-only changes from nginx changes', () => {
    const entries = new Map<number, Entry>([
      [9000, live(9000)],
      [9001, live(9001)],
      [9002, live(9002)],
      [9003, { record: record(9003), state: 'failed', reason: 'x' }],
    ]);
    const labelled: Entry = { record: { ...record(9002), labels: { team: 'a' } }, state: 'live' };
    const plan = planChange(entries, [
      change(9000, undefined),
      change(9001, live(9001, '127.0.0.1:1')),
      change(9002, labelled),
      change(9004, live(9004)),
    ]);
    expect(plan.touched).toEqual([9000, 9001, 9002, 9004]);
    expect(plan.opened).toEqual({ tcp: [9004], udp: [] });
    expect(plan.closed).toEqual({ tcp: [9000], udp: [] });
    expect(plan.inPlace).toEqual({ tcp: [9001], udp: [] });
    expect(plan.write.map((one) => one.port)).toEqual([9001, 9002, 9004]);
    expect(plan.remove).toEqual([9000]);
    expect(plan).toMatchObject({ nginxChanges: true, changedInPlace: true });
    expect([...plan.target.keys()].sort()).toEqual([9001, 9002, 9003, 9004]);
  });

  it('needs no reload for a change of labels alone', () => {
    const labelled: Entry = { record: { ...record(9000), labels: { team: 'a' } }, state: 'live' };
    expect(planChange(new Map([[9000, live(9000)]]), [change(9000, labelled)])).toMatchObject({
      nginxChanges: false,
      changedInPlace: false,
    });
  });
});

describe('ChangeTransaction', () => {
  const run = (...accepted: Accepted[]) => new ChangeTransaction(state, accepted).run();

  it('writes, stores and reloads, then takes the new entries', async () => {
    await expect(run(change(9001, live(9001)))).resolves.toEqual({ kind: 'ok', warnings: [] });
    expect(journal).toEqual(['files.apply 9001 -', 'store.commit 9001 -', 'nginx.reload']);
    expect([...state.entries.keys()]).toEqual([9000, 9001]);
  });

  it('stores a stream changed in place only once nginx took it', async () => {
    await expect(run(change(9000, live(9000, '127.0.0.1:1')))).resolves.toMatchObject({ kind: 'ok' });
    expect(journal).toEqual(['files.apply 9000 -', 'nginx.reload urgent', 'store.commit 9000 -']);
  });

  it('puts the files back when they cannot be written, and stores nothing', async () => {
    files.failApply = true;
    const result = await run(change(9001, live(9001)));
    expect(result.kind === 'all' && result.error.code).toBe(ErrorCode.StorageFailed);
    expect(journal).toEqual(['files.apply 9001 -', 'files.restore']);
    expect([...files.texts.keys()]).toEqual([9000]);
    expect([...state.entries.keys()]).toEqual([9000]);
  });

  it('undoes files and store when the test refuses, and blames the stream it names', async () => {
    state.options.testBeforeReload = true;
    const text = 'host not found in upstream "gone.invalid:80" in /srv/stream.d/_conductor_9001.conf:5';
    nginx.testAnswer = { ok: false, message: text, lines: [{ level: 'emerg', text }] };
    const result = await run(change(9001, live(9001)));
    expect(result.kind === 'culprits' && [...result.culprits.keys()]).toEqual([9001]);
    expect(journal).toEqual([
      'files.apply 9001 -',
      'store.commit 9001 -',
      'nginx.test',
      'files.restore',
      'store.commit  -9001',
    ]);
    expect(files.texts.has(9001)).toBe(false);
    expect([...state.entries.keys()]).toEqual([9000]);
  });

  it('reloads once more after a reload whose outcome is unknown (a timeout), to match the files put back', async () => {
    nginx.reloads = [
      {
        ok: false,
        code: 'RELOAD_FAILED',
        message: 'nginx did not start new workers within 3 s of the reload',
        lines: [],
      },
    ];
    const result = await run(change(9001, live(9001)));
    expect(result.kind === 'all' && result.error.code).toBe(ErrorCode.NginxRejected);
    expect(journal).toEqual([
      'files.apply 9001 -',
      'store.commit 9001 -',
      'nginx.reload',
      'files.restore',
      'store.commit  -9001',
      'nginx.reload',
    ]);
  });

  it('does not reload again when nginx said why it gave up', async () => {
    const text = 'bind() to 0.0.0.0:9001 failed (98: Address already in use)';
    nginx.reloads = [{ ok: false, code: 'RELOAD_FAILED', message: text, lines: [{ level: 'emerg', text }] }];
    const result = await run(change(9001, live(9001)));
    expect(result.kind === 'culprits' && result.culprits.get(9001)?.code).toBe(ErrorCode.PortInUse);
    expect(journal.filter((step) => step.startsWith('nginx.reload'))).toHaveLength(1);
  });

  it('reverts nginx (files back and a reload) when the store fails after nginx took the change', async () => {
    store.failNext = true;
    const result = await run(change(9001, live(9001)));
    expect(result.kind === 'all' && result.error.code).toBe(ErrorCode.StorageFailed);
    expect(journal).toEqual([
      'files.apply 9001 -',
      'store.commit 9001 -',
      'nginx.reload',
      'files.restore',
      'nginx.reload',
    ]);
    expect([...files.texts.keys()]).toEqual([9000]);
    expect([...state.entries.keys()]).toEqual([9000]);
  });

  it('only puts the files back when the store fails for a change nginx never saw', async () => {
    store.failNext = true;
    const labelled: Entry = { record: { ...record(9000), labels: { team: 'a' } }, state: 'live' };
    const result = await run(change(9000, labelled));
    expect(result.kind).toBe('all');
    expect(journal).toEqual(['files.apply 9000 -', 'store.commit 9000 -', 'files.restore']);
  });
});
