import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { type StreamRecord, simpleSpec } from '@stream-conductor/shared';
import { FileStore, StoreCorruptError } from '../src/streams/file-store.js';

let folder: string;

beforeEach(async () => {
  folder = await mkdtemp(join(tmpdir(), 'sc-test-'));
});

afterEach(async () => {
  await rm(folder, { recursive: true, force: true });
});

const rec = (port: number, backend: string, createdAt = '2026-01-02T03:04:05.000Z'): StreamRecord => ({
  ...simpleSpec(port, backend),
  createdAt,
});

/** The exact text the store writes for `records` (already sorted). */
const storeText = (records: StreamRecord[]): string => `${JSON.stringify({ format: 1, streams: records }, null, 1)}\n`;

describe('FileStore load', () => {
  it('loads nothing, and no problem, when the file does not exist', async () => {
    const store = new FileStore(join(folder, 'nested', 'streams.json'));
    expect(await store.load()).toEqual({ records: [], problems: [] });
    await expect(readdir(folder)).resolves.toEqual([]);
  });

  it.each<[string, string]>([
    ['not JSON', '{"format": 1, "streams": ['],
    ['empty', ''],
    ['another format', '{"format": 2, "streams": []}'],
    ['no format', '{"streams": []}'],
    ['format as text', '{"format": "1", "streams": []}'],
    ['streams not a list', '{"format": 1, "streams": {}}'],
    ['no streams', '{"format": 1}'],
    ['a list', '[]'],
    ['a number', '1'],
    ['a string', '"streams"'],
    ['null', 'null'],
  ])('throws StoreCorruptError for a file that is %s', async (_what, content) => {
    const path = join(folder, 'streams.json');
    await writeFile(path, content);
    await expect(new FileStore(path).load()).rejects.toBeInstanceOf(StoreCorruptError);
  });

  it('names the file and says what to do when it is not JSON', async () => {
    const path = join(folder, 'streams.json');
    await writeFile(path, 'garbage');
    const error = await new FileStore(path).load().then(
      () => undefined,
      (thrown: unknown) => thrown,
    );
    expect(error).toBeInstanceOf(StoreCorruptError);
    // The line the daemon prints: the message, then the hint.
    expect((error as StoreCorruptError).line()).toMatch(
      new RegExp(`^${path.replace(/[.]/g, '\\.')} is not valid JSON \\(.*\\); move it aside to start empty$`),
    );
    expect((error as StoreCorruptError).code).toBe('STORE_CORRUPT');
  });

  it('names the file and the format it expects', async () => {
    const path = join(folder, 'streams.json');
    await writeFile(path, '{"format": 2, "streams": []}');
    await expect(new FileStore(path).load()).rejects.toThrow(
      new StoreCorruptError(`${path} is not a stream-conductor store of format 1`),
    );
  });

  it('skips invalid entries and reports each in problems', async () => {
    const path = join(folder, 'streams.json');
    await writeFile(
      path,
      JSON.stringify({
        format: 1,
        streams: [
          { port: 9000, backend: '10.0.0.5:5432', createdAt: '2026-01-02T03:04:05.000Z' },
          { port: 'abc', backend: 'b:2' },
          { port: 9001, backend: 'bad' },
          { port: 9000, backend: 'c:3', createdAt: '2026-01-03T00:00:00.000Z' },
          { port: '9002', backend: 'Host.Example:80', createdAt: '2026-01-04T00:00:00.000Z' },
          { port: 9003, backend: 'd:4' },
          { port: 70000, backend: 'e:5' },
          { port: 9004, backend: 'a:1;proxy_timeout 1s' },
          null,
        ],
      }),
    );
    const loaded = await new FileStore(path).load();
    expect(loaded.records).toEqual([
      rec(9000, '10.0.0.5:5432'),
      rec(9002, 'host.example:80', '2026-01-04T00:00:00.000Z'),
      rec(9003, 'd:4', '1970-01-01T00:00:00.000Z'),
    ]);
    expect(loaded.problems.slice(0, 5)).toEqual([
      'store entry {"port":"abc","backend":"b:2"} was skipped: port must be a whole number from 1 to 65535, got "abc"',
      'store entry {"port":9001,"backend":"bad"} was skipped: backend "bad" has no port',
      'store entry {"port":9000,"backend":"c:3","createdAt":"2026-01-03T00:00:00.000Z"} was skipped: port 9000 appears twice',
      'store entry {"port":70000,"backend":"e:5"} was skipped: port must be a whole number from 1 to 65535, got 70000',
      'store entry {"port":9004,"backend":"a:1;proxy_timeout 1s"} was skipped: backend port must be a whole number from 1 to 65535, got "1;proxy_timeout 1s"',
    ]);
    expect(loaded.problems).toHaveLength(6);
    expect(loaded.problems[5]).toMatch(/^store entry null was skipped: /);
  });
});

describe('FileStore commit', () => {
  it('writes puts, sorted by port, and a new instance loads them', async () => {
    const path = join(folder, 'state', 'streams.json');
    const store = new FileStore(path);
    await store.load();
    await store.commit({ put: [rec(9005, 'e:5'), rec(9001, 'a:1')], remove: [] });
    await store.commit({ put: [rec(9003, 'c:3')], remove: [] });
    expect(await readFile(path, 'utf8')).toBe(storeText([rec(9001, 'a:1'), rec(9003, 'c:3'), rec(9005, 'e:5')]));
    expect(await new FileStore(path).load()).toEqual({
      records: [rec(9001, 'a:1'), rec(9003, 'c:3'), rec(9005, 'e:5')],
      problems: [],
    });
  });

  it('removes, replaces, and applies a put and a remove of one change together', async () => {
    const path = join(folder, 'streams.json');
    const store = new FileStore(path);
    await store.load();
    await store.commit({ put: [rec(9001, 'a:1'), rec(9002, 'b:2'), rec(9003, 'c:3')], remove: [] });
    await store.commit({ put: [rec(9004, 'd:4')], remove: [9002] });
    await store.commit({ put: [rec(9001, 'z:26')], remove: [9001, 9999] });
    expect(await new FileStore(path).load()).toEqual({
      records: [rec(9001, 'z:26'), rec(9003, 'c:3'), rec(9004, 'd:4')],
      problems: [],
    });
  });

  it('writes an empty list once every stream is removed', async () => {
    const path = join(folder, 'streams.json');
    const store = new FileStore(path);
    await store.load();
    await store.commit({ put: [rec(9001, 'a:1')], remove: [] });
    await store.commit({ put: [], remove: [9001] });
    expect(await readFile(path, 'utf8')).toBe('{\n "format": 1,\n "streams": []\n}\n');
    expect(await new FileStore(path).load()).toEqual({ records: [], problems: [] });
  });

  it('starts from what load found', async () => {
    const path = join(folder, 'streams.json');
    await writeFile(path, storeText([rec(9001, 'a:1'), rec(9002, 'b:2')]));
    const store = new FileStore(path);
    await store.load();
    await store.commit({ put: [rec(9000, 'x:1')], remove: [9002] });
    expect(await readFile(path, 'utf8')).toBe(storeText([rec(9000, 'x:1'), rec(9001, 'a:1')]));
  });

  it('loads a TLS stream back with the copies it serves, as written', async () => {
    const id = '0123456789abcdef0123456789abcdef';
    const tls: StreamRecord = {
      ...rec(9001, '127.0.0.1:22'),
      tlsCert: '/etc/ssl/edge.pem',
      tlsKey: '/etc/ssl/edge.key',
      tlsMaterial: {
        id,
        cert: `/var/lib/sc/stream-tls/${id}.cert.pem`,
        key: `/var/lib/sc/stream-tls/${id}.key.pem`,
        certificates: [
          {
            field: 'tlsCert',
            subject: 'CN=edge',
            notBefore: '2026-01-01T00:00:00.000Z',
            notAfter: '2027-01-01T00:00:00.000Z',
            fingerprint256: 'AB:CD',
          },
        ],
      },
    };
    const path = join(folder, 'streams.json');
    await new FileStore(path).commit({ put: [tls], remove: [] });
    expect(await new FileStore(path).load()).toEqual({ records: [tls], problems: [] });
  });

  it.each<[string, Record<string, unknown>, RegExp]>([
    ['a copy path outside its naming', { cert: '/etc/shadow' }, /tlsMaterial\.cert is not a copy the daemon made/],
    ['a path nginx would read as syntax', { cert: `/x;/${'a'.repeat(32)}.cert.pem` }, /tlsMaterial\.cert/],
    ['a relative path', { cert: `${'a'.repeat(32)}.cert.pem` }, /tlsMaterial\.cert/],
    ['an unknown part', { extra: '/x' }, /tlsMaterial\.extra: unknown field/],
    ['an id that is no digest', { id: '../x' }, /tlsMaterial\.id is not a digest/],
    ['facts of an unknown field', { certificates: [{ field: 'tlsKey' }] }, /certificates\[0\]\.field/],
  ])('skips a TLS stream whose recorded copies were tampered with: %s', async (_, change, message) => {
    const id = 'a'.repeat(32);
    const entry = {
      ...rec(9001, '127.0.0.1:22'),
      tlsCert: '/etc/ssl/edge.pem',
      tlsKey: '/etc/ssl/edge.key',
      tlsMaterial: { id, cert: `/h/${id}.cert.pem`, key: `/h/${id}.key.pem`, certificates: [], ...change },
    };
    await writeFile(join(folder, 'streams.json'), storeText([entry as StreamRecord]));
    const { records, problems } = await new FileStore(join(folder, 'streams.json')).load();
    expect(records).toEqual([]);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(message);
  });

  it('leaves out entries load skipped once it commits', async () => {
    const path = join(folder, 'streams.json');
    await writeFile(path, JSON.stringify({ format: 1, streams: [rec(9001, 'a:1'), { port: 9002, backend: 'bad' }] }));
    const store = new FileStore(path);
    expect((await store.load()).problems).toHaveLength(1);
    await store.commit({ put: [], remove: [] });
    expect(await readFile(path, 'utf8')).toBe(storeText([rec(9001, 'a:1')]));
  });

  it('keeps the file private (mode 0600), also when it replaces one', async () => {
    const path = join(folder, 'streams.json');
    await writeFile(path, storeText([]), { mode: 0o644 });
    const store = new FileStore(path);
    await store.load();
    await store.commit({ put: [rec(9001, 'a:1')], remove: [] });
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    await store.commit({ put: [rec(9002, 'b:2')], remove: [] });
    expect((await stat(path)).mode & 0o777).toBe(0o600);
  });

  it('leaves no temporary file behind', async () => {
    const path = join(folder, 'streams.json');
    const store = new FileStore(path);
    await store.load();
    await store.commit({ put: [rec(9001, 'a:1')], remove: [] });
    await store.commit({ put: [rec(9002, 'b:2')], remove: [] });
    expect(await readdir(folder)).toEqual(['streams.json']);
  });

  it('applies concurrent commits one after the other, in call order', async () => {
    const path = join(folder, 'streams.json');
    const store = new FileStore(path);
    await store.load();
    await Promise.all([
      store.commit({ put: [rec(9001, 'a:1')], remove: [] }),
      store.commit({ put: [rec(9002, 'b:2')], remove: [] }),
      store.commit({ put: [rec(9001, 'z:26')], remove: [9002] }),
      store.commit({ put: [rec(9003, 'c:3')], remove: [] }),
    ]);
    expect(await readFile(path, 'utf8')).toBe(storeText([rec(9001, 'z:26'), rec(9003, 'c:3')]));
  });

  it('a failed commit changes neither the file nor the store, and a later commit works', async () => {
    const stateDir = join(folder, 'state');
    const path = join(stateDir, 'streams.json');
    const store = new FileStore(path);
    await store.load();
    await store.commit({ put: [rec(9001, 'a:1'), rec(9002, 'b:2')], remove: [] });
    const before = await readFile(path, 'utf8');

    // The store's folder is moved away and a plain file takes its place: nothing can be written.
    await rename(stateDir, join(folder, 'state.saved'));
    await writeFile(stateDir, 'not a folder');
    const failed = store.commit({ put: [rec(9003, 'c:3')], remove: [9001] });
    await expect(failed).rejects.toMatchObject({ code: expect.stringMatching(/^(EEXIST|ENOTDIR)$/) });
    // A commit queued behind the failed one fails on its own, without waiting forever.
    await expect(store.commit({ put: [rec(9004, 'd:4')], remove: [] })).rejects.toMatchObject({
      code: expect.stringMatching(/^(EEXIST|ENOTDIR)$/),
    });

    await rm(stateDir);
    await rename(join(folder, 'state.saved'), stateDir);
    expect(await readFile(path, 'utf8')).toBe(before);
    expect(await readdir(stateDir)).toEqual(['streams.json']);

    // The in-memory state is the last one that reached the disk: 9003, 9004 and the removal of 9001 are not in it.
    await store.commit({ put: [rec(9005, 'e:5')], remove: [] });
    expect(await readFile(path, 'utf8')).toBe(storeText([rec(9001, 'a:1'), rec(9002, 'b:2'), rec(9005, 'e:5')]));
    expect((await new FileStore(path).load()).records).toEqual([rec(9001, 'a:1'), rec(9002, 'b:2'), rec(9005, 'e:5')]);
  });

  it('a commit that fails on the first write leaves no file, and a later commit works', async () => {
    const path = join(folder, 'parent', 'streams.json');
    await writeFile(join(folder, 'parent'), 'not a folder');
    const store = new FileStore(path);
    await store.load().catch(() => undefined); // reading through a file fails too; the store stays empty
    await expect(store.commit({ put: [rec(9001, 'a:1')], remove: [] })).rejects.toMatchObject({
      code: expect.stringMatching(/^(EEXIST|ENOTDIR)$/),
    });
    await rm(join(folder, 'parent'));
    await mkdir(join(folder, 'parent'));
    await store.commit({ put: [rec(9002, 'b:2')], remove: [] });
    expect(await readFile(path, 'utf8')).toBe(storeText([rec(9002, 'b:2')]));
  });
});
