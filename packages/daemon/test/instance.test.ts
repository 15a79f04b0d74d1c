/**
 * The apply pipeline against a scripted nginx: batching, blame, rollback to the exact previous
 * bytes, and what happens when the disk or the store fails. The per-stream files are real files
 * in a temporary folder; nginx, the kernel's port table and the store are fakes.
 */

import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { ConductorError, ErrorCode, type StreamRecord, simpleSpec } from '@stream-conductor/shared';
import { silentLogger } from '../src/log.js';
import type { TestResult } from '../src/nginx/binary.js';
import { type Mutation, NginxInstance } from '../src/nginx/instance.js';
import type { ReloadOutcome } from '../src/nginx/process/controller.js';
import { StreamFiles } from '../src/nginx/stream-files.js';
import type { StoreChange, StoreLoad, StreamStore } from '../src/streams/store.js';
import type { PortProbe } from '../src/sys/ports.js';
import { QuietNginx } from './fake-nginx.js';

/** An nginx that reads the real files: a name ending in .invalid fails the test, a held port fails the reload. */
class ScriptedNginx extends QuietNginx {
  tests = 0;
  reloads = 0;
  /** Ports nginx listens on after its last good reload. */
  listening = new Set<number>();
  /** Ports some other process holds: a reload that binds one fails. */
  held = new Set<number>();
  /** When set, every reload answers this. */
  reloadAnswer: ReloadOutcome | undefined;
  /** When set, every test answers this. */
  testAnswer: TestResult | undefined;
  /** Holds a reload until released, to let requests pile up. */
  gate: Promise<void> | undefined;

  constructor(
    private readonly folder: string,
    readonly mode: 'managed' | 'external' = 'managed',
  ) {
    super();
  }

  private async files(): Promise<Array<{ port: number; text: string; path: string }>> {
    const files = [];
    for (const name of await readdir(this.folder)) {
      const match = /^_conductor_([0-9]+)\.conf$/.exec(name);
      if (match)
        files.push({
          port: Number(match[1]),
          path: join(this.folder, name),
          text: await readFile(join(this.folder, name), 'utf8'),
        });
    }
    return files;
  }

  async test(): Promise<TestResult> {
    this.tests += 1;
    return this.parse();
  }

  /** What nginx finds wrong when it reads the files, by `nginx -t` or by a reload. */
  private async parse(): Promise<TestResult> {
    if (this.testAnswer) return this.testAnswer;
    for (const file of await this.files()) {
      const bad = /proxy_pass ([a-z0-9.-]+\.invalid):[0-9]+;/.exec(file.text);
      if (bad) {
        const text = `host not found in upstream "${bad[1]}" in ${file.path}:5`;
        return { ok: false, message: text, lines: [{ level: 'emerg', text }] };
      }
    }
    return { ok: true, message: '', lines: [] };
  }

  async reload(): Promise<ReloadOutcome> {
    this.reloads += 1;
    if (this.gate) await this.gate;
    if (this.reloadAnswer) return this.reloadAnswer;
    const parsed = await this.parse();
    if (!parsed.ok) return { ok: false, code: 'RELOAD_FAILED', message: parsed.message, lines: parsed.lines };
    const files = await this.files();
    const clash = files.filter((file) => this.held.has(file.port));
    if (clash.length > 0) {
      const lines = clash.map((file) => ({
        level: 'emerg',
        text: `bind() to 127.0.0.1:${file.port} failed (98: Address already in use)`,
      }));
      lines.push({ level: 'emerg', text: 'still could not bind()' });
      return { ok: false, code: 'RELOAD_FAILED', message: lines[0]?.text ?? '', lines };
    }
    this.listening = new Set(files.map((file) => file.port));
    return { ok: true, message: '', lines: [] };
  }
}

class MemoryStore implements StreamStore {
  records = new Map<number, StreamRecord>();
  commits = 0;
  failNext: NodeJS.ErrnoException | undefined;

  async load(): Promise<StoreLoad> {
    return { records: [...this.records.values()], problems: [] };
  }

  async commit(change: StoreChange): Promise<void> {
    if (this.failNext) {
      const error = this.failNext;
      this.failNext = undefined;
      throw error;
    }
    this.commits += 1;
    for (const port of change.remove) this.records.delete(port);
    for (const record of change.put) this.records.set(record.port, record);
  }
}

let folder: string;
let nginx: ScriptedNginx;
let store: MemoryStore;
let inUse: Set<number>;
let files: StreamFiles;
let instance: NginxInstance;

const record = (port: number, backend = `127.0.0.1:${port + 1000}`): StreamRecord => ({
  ...simpleSpec(port, backend),
  createdAt: '2026-01-01T00:00:00.000Z',
});
const create = (port: number, backend?: string): Mutation => ({ kind: 'create', record: record(port, backend) });
const remove = (port: number): Mutation => ({ kind: 'remove', port });

async function folderState(): Promise<Record<string, string>> {
  const state: Record<string, string> = {};
  for (const name of (await readdir(folder)).sort()) state[name] = await readFile(join(folder, name), 'utf8');
  return state;
}

async function refusal(promise: Promise<unknown>): Promise<ConductorError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof ConductorError) return error;
    throw error;
  }
  throw new Error('expected a refusal');
}

beforeEach(async () => {
  folder = await mkdtemp(join(tmpdir(), 'sc-test-'));
  nginx = new ScriptedNginx(folder);
  store = new MemoryStore();
  inUse = new Set();
  files = new StreamFiles(folder, '_conductor_', { listenAddress: '127.0.0.1' });
  instance = makeInstance(nginx);
});

function makeInstance(controller: ScriptedNginx): NginxInstance {
  return new NginxInstance({
    id: 0,
    controller,
    files,
    store,
    probePort: async (port: number): Promise<PortProbe> => (inUse.has(port) ? 'in-use' : 'free'),
    listeningPorts: async () => ({ tcp: new Set(controller.listening), udp: new Set<number>() }),
    log: silentLogger,
    verifyTimeoutMs: 200,
  });
}

afterEach(async () => {
  await rm(folder, { recursive: true, force: true });
});

describe('one request', () => {
  it('writes, tests, reloads, verifies, stores, then answers', async () => {
    await expect(instance.submit(create(9000))).resolves.toMatchObject({ warnings: [], change: 'created' });
    expect(Object.keys(await folderState())).toEqual(['_conductor_9000.conf']);
    expect(nginx.tests).toBe(0); // a managed nginx's reload is its test
    expect(nginx.reloads).toBe(1);
    expect([...store.records.keys()]).toEqual([9000]);
    expect(instance.get(9000)?.state).toBe('live');
    await expect(instance.submit(remove(9000))).resolves.toMatchObject({ warnings: [], change: 'removed' });
    expect(await folderState()).toEqual({});
    expect(store.records.size).toBe(0);
  });

  it('refuses a taken port, a missing stream and a port held elsewhere without touching nginx', async () => {
    await instance.submit(create(9000));
    inUse.add(9001);
    const before = await folderState();
    expect((await refusal(instance.submit(create(9000)))).code).toBe(ErrorCode.StreamExists);
    expect((await refusal(instance.submit(remove(9005)))).code).toBe(ErrorCode.NotFound);
    const held = await refusal(instance.submit(create(9001)));
    expect(held.code).toBe(ErrorCode.PortInUse);
    expect(held.message).toBe('port 9001 is held by another process on this host');
    expect(nginx.reloads).toBe(1);
    expect(await folderState()).toEqual(before);
  });
});

describe('batches', () => {
  it('applies the requests that arrive during a reload together, in one more reload', async () => {
    let release: () => void = () => undefined;
    nginx.gate = new Promise((done) => (release = done));
    const first = instance.submit(create(9000));
    await new Promise((done) => setTimeout(done, 20));
    const rest = [9001, 9002, 9003, 9004, 9005].map((port) => instance.submit(create(port)));
    nginx.gate = undefined;
    release();
    await Promise.all([first, ...rest]);
    expect(nginx.reloads).toBe(2);
    expect(store.commits).toBe(2);
    expect([...store.records.keys()].sort()).toEqual([9000, 9001, 9002, 9003, 9004, 9005]);
  });

  it('a put on condition (ifSpec) is refused with CONFLICT when a change queued before it replaced the definition', async () => {
    await instance.submit(create(9000));
    const lookedAt = record(9000);
    let release: () => void = () => undefined;
    nginx.gate = new Promise((done) => (release = done));
    const blocker = instance.submit(create(9001));
    await new Promise((done) => setTimeout(done, 20));
    // An operator's replace, then a background change based on the definition it looked at before.
    const operator = instance.submit({ kind: 'put', record: record(9000, '127.0.0.1:2222') });
    const background = instance.submit({ kind: 'put', record: record(9000, '127.0.0.1:3333'), ifSpec: lookedAt });
    nginx.gate = undefined;
    release();
    await blocker;
    await expect(operator).resolves.toMatchObject({ change: 'replaced' });
    const refused = await refusal(background);
    expect(refused.code).toBe(ErrorCode.Conflict);
    expect(refused.message).toContain('stream 9000 changed meanwhile');
    expect(store.records.get(9000)?.backends).toEqual([{ address: '127.0.0.1:2222' }]);
    // On the definition that holds, the same condition lets it through.
    await expect(
      instance.submit({ kind: 'put', record: record(9000, '127.0.0.1:3333'), ifSpec: record(9000, '127.0.0.1:2222') }),
    ).resolves.toMatchObject({ change: 'replaced' });
    expect(store.records.get(9000)?.backends).toEqual([{ address: '127.0.0.1:3333' }]);
  });

  it('a remove on condition (ifSpec) is refused with CONFLICT when a change queued before it replaced the definition', async () => {
    await instance.submit(create(9000));
    const lookedAt = record(9000);
    let release: () => void = () => undefined;
    nginx.gate = new Promise((done) => (release = done));
    const blocker = instance.submit(create(9001));
    await new Promise((done) => setTimeout(done, 20));
    // A replace, then the removal of the last route of the definition read before it.
    const operator = instance.submit({ kind: 'put', record: record(9000, '127.0.0.1:2222') });
    const removal = instance.submit({ kind: 'remove', port: 9000, ifSpec: lookedAt });
    nginx.gate = undefined;
    release();
    await blocker;
    await expect(operator).resolves.toMatchObject({ change: 'replaced' });
    expect((await refusal(removal)).message).toContain('stream 9000 changed meanwhile');
    expect(store.records.get(9000)?.backends).toEqual([{ address: '127.0.0.1:2222' }]);
    // On the definition that holds, the same condition lets it through.
    await expect(
      instance.submit({ kind: 'remove', port: 9000, ifSpec: record(9000, '127.0.0.1:2222') }),
    ).resolves.toMatchObject({ change: 'removed' });
    expect(store.records.has(9000)).toBe(false);
  });

  it('refuses only the request nginx blames, and applies the others', async () => {
    await instance.submit(create(9009));
    nginx.reloads = 0;
    let release: () => void = () => undefined;
    nginx.gate = new Promise((done) => (release = done));
    const blocker = instance.submit(create(9000));
    await new Promise((done) => setTimeout(done, 20));
    const good = instance.submit(create(9001));
    const bad = instance.submit(create(9002, 'nowhere.invalid:22'));
    const alsoGood = instance.submit(create(9003));
    nginx.gate = undefined;
    release();
    await blocker;
    await expect(good).resolves.toMatchObject({ warnings: [], change: 'created' });
    await expect(alsoGood).resolves.toMatchObject({ warnings: [], change: 'created' });
    const error = await refusal(bad);
    expect(error.code).toBe(ErrorCode.NginxRejected);
    expect(error.message).toBe('nginx refused the stream on port 9002: host not found in upstream "nowhere.invalid"');
    expect(Object.keys(await folderState())).toEqual([
      '_conductor_9000.conf',
      '_conductor_9001.conf',
      '_conductor_9003.conf',
      '_conductor_9009.conf',
    ]);
    expect([...store.records.keys()].sort()).toEqual([9000, 9001, 9003, 9009]);
  });

  it('refuses a port nginx could not bind, with PORT_IN_USE, and applies the rest', async () => {
    nginx.held.add(9001);
    const results = await Promise.allSettled([
      instance.submit(create(9000)),
      instance.submit(create(9001)),
      instance.submit(create(9002)),
    ]);
    expect(results.map((result) => result.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    const error = (results[1] as PromiseRejectedResult).reason as ConductorError;
    expect(error.code).toBe(ErrorCode.PortInUse);
    expect(error.message).toBe(
      'nginx refused the stream on port 9001: bind() to 127.0.0.1:9001 failed (98: Address already in use)',
    );
    expect(Object.keys(await folderState())).toEqual(['_conductor_9000.conf', '_conductor_9002.conf']);
  });

  it('applies one at a time when nginx refuses a batch without naming a culprit', async () => {
    let release: () => void = () => undefined;
    nginx.gate = new Promise((done) => (release = done));
    const blocker = instance.submit(create(9000));
    await new Promise((done) => setTimeout(done, 20));
    const batch = [9001, 9002, 9003].map((port) => instance.submit(create(port)));
    // nginx fails only while 9002's file is present, without saying which file.
    const realReload = nginx.reload.bind(nginx);
    nginx.reload = async () => {
      const names = await readdir(folder);
      if (names.includes('_conductor_9002.conf')) {
        return {
          ok: false,
          code: 'RELOAD_FAILED',
          message: 'too many open files',
          lines: [{ level: 'emerg', text: 'too many open files' }],
        };
      }
      return realReload();
    };
    nginx.gate = undefined;
    release();
    await blocker;
    const settled = await Promise.allSettled(batch);
    expect(settled.map((result) => result.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(((settled[1] as PromiseRejectedResult).reason as ConductorError).message).toBe(
      'nginx refused the change: too many open files',
    );
    expect([...store.records.keys()].sort()).toEqual([9000, 9001, 9003]);
  });

  it('keeps the order of requests for the same port within a batch', async () => {
    await instance.submit(create(9000, '127.0.0.1:1'));
    let release: () => void = () => undefined;
    nginx.gate = new Promise((done) => (release = done));
    const blocker = instance.submit(create(9001));
    await new Promise((done) => setTimeout(done, 20));
    const removed = instance.submit(remove(9000));
    const recreated = instance.submit(create(9000, '127.0.0.1:2'));
    const duplicate = instance.submit(create(9000, '127.0.0.1:3'));
    nginx.gate = undefined;
    release();
    await blocker;
    await expect(removed).resolves.toMatchObject({ warnings: [], change: 'removed' });
    await expect(recreated).resolves.toMatchObject({ warnings: [], change: 'created' });
    expect((await refusal(duplicate)).code).toBe(ErrorCode.StreamExists);
    expect(instance.get(9000)?.record.backends).toEqual([{ address: '127.0.0.1:2' }]);
    expect(await readFile(join(folder, '_conductor_9000.conf'), 'utf8')).toContain('proxy_pass 127.0.0.1:2;');
  });
});

describe('rollback', () => {
  it('puts back the exact previous bytes when nginx is unavailable', async () => {
    await instance.submit(create(9000));
    await writeFile(join(folder, '_conductor_9000.conf'), 'hand-edited bytes\n');
    await writeFile(join(folder, 'operator.conf'), 'not ours\n');
    const before = await folderState();
    nginx.reloadAnswer = { ok: false, code: 'NGINX_UNAVAILABLE', message: 'nginx is not running', lines: [] };
    const errors = await Promise.all([refusal(instance.submit(create(9001))), refusal(instance.submit(remove(9000)))]);
    for (const error of errors) {
      expect(error.code).toBe(ErrorCode.NginxUnavailable);
      expect(error.message).toBe('nginx is not available: nginx is not running');
    }
    expect(await folderState()).toEqual(before);
    expect([...store.records.keys()]).toEqual([9000]);
  });

  it('reverts nginx when the store cannot record a change it already applied', async () => {
    await instance.submit(create(9000));
    const before = await folderState();
    const reloads = nginx.reloads;
    store.failNext = Object.assign(new Error('no space'), { code: 'ENOSPC' });
    const error = await refusal(instance.submit(create(9001)));
    expect(error.code).toBe(ErrorCode.StorageFailed);
    expect(error.message).toBe('the change could not be written: no space left on the device');
    expect(await folderState()).toEqual(before);
    expect(nginx.reloads).toBe(reloads + 2); // the change, then the way back
    expect([...nginx.listening]).toEqual([9000]);
    expect(instance.get(9001)).toBeUndefined();
    await expect(instance.submit(create(9001))).resolves.toMatchObject({ warnings: [], change: 'created' });
  });

  it('refuses with STORAGE_FAILED and leaves nothing behind when a stream file cannot be written', async () => {
    await instance.submit(create(9000));
    const before = await folderState();
    const original = files.apply.bind(files);
    files.apply = async (write) => {
      await original(write.slice(0, 1), []);
      throw Object.assign(new Error('disk full'), { code: 'ENOSPC' });
    };
    const errors = await Promise.all([refusal(instance.submit(create(9001))), refusal(instance.submit(create(9002)))]);
    expect(errors.map((error) => error.code)).toEqual([ErrorCode.StorageFailed, ErrorCode.StorageFailed]);
    expect(await folderState()).toEqual(before);
    expect(nginx.reloads).toBe(1); // only the first, successful create reached nginx
    files.apply = original;
  });

  it('refuses with RELOAD_FAILED when an external nginx reloads but the port does not listen', async () => {
    nginx = new ScriptedNginx(folder, 'external');
    instance = makeInstance(nginx);
    const realReload = nginx.reload.bind(nginx);
    nginx.reload = async () => {
      const outcome = await realReload();
      nginx.listening.delete(9000);
      return outcome;
    };
    const error = await refusal(instance.submit(create(9000)));
    expect(error.code).toBe(ErrorCode.ReloadFailed);
    expect(error.message).toBe('nginx reloaded but nothing listens on port 9000');
    expect(error.hint).toBe("is STREAM_CONFIG_PATH included inside nginx's stream {} block?");
    expect(await folderState()).toEqual({});
    expect(nginx.tests).toBe(1); // an external nginx is tested before its reload
  });
});

describe('reconcile', () => {
  it('writes every definition, drops stale files and temporaries, and sets aside what nginx refuses', async () => {
    await writeFile(join(folder, '_conductor_9100.conf'), 'stale\n');
    await writeFile(join(folder, '.tmp-_conductor_9000.conf.1234'), 'half');
    await writeFile(join(folder, 'operator.conf'), 'not ours\n');
    instance.load([record(9000), record(9001, 'gone.invalid:22'), record(9002)]);
    nginx.held.add(9002);
    await instance.reconcile();
    expect(Object.keys(await folderState())).toEqual(['_conductor_9000.conf', 'operator.conf']);
    expect(instance.get(9000)?.state).toBe('live');
    expect(instance.get(9001)).toMatchObject({
      state: 'failed',
      reason: 'nginx: host not found in upstream "gone.invalid"',
    });
    expect(instance.get(9002)).toMatchObject({
      state: 'failed',
      reason: 'nginx: bind() to 127.0.0.1:9002 failed (98: Address already in use)',
    });
    // The next reconcile tries the set-aside ones again.
    nginx.held.clear();
    await instance.reconcile();
    expect(instance.get(9002)?.state).toBe('live');
    expect(instance.get(9001)?.state).toBe('failed');
  });

  it('takes no more changes once closing', async () => {
    await instance.close();
    expect((await refusal(instance.submit(create(9000)))).code).toBe(ErrorCode.ShuttingDown);
  });
});
