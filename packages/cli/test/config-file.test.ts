/**
 * The CLI's configuration file: where it is, every kind of bad file refused naming the file and
 * line, the token file, and writing (mode 0600 in a 0700 folder, atomic, comments kept).
 */
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  open,
  readdir,
  readFile,
  readlink,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { ConductorError, ErrorCode } from '@stream-conductor/shared';
import * as yaml from 'yaml';
import { addContext, removeContext, useContext } from '../src/commands/context.js';
import { configPath, parseConfigText, readConfigFile, saveConfigFile, writeConfigFile } from '../src/config-file.js';
import { readTokenFile } from '../src/contexts.js';

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sc-unit-config-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function usageMessage(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(ConductorError);
    expect((error as ConductorError).code).toBe(ErrorCode.Usage);
    return (error as ConductorError).message;
  }
  throw new Error('expected a usage error');
}

async function usageMessageOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(ConductorError);
    expect((error as ConductorError).code).toBe(ErrorCode.Usage);
    return (error as ConductorError).message;
  }
  throw new Error('expected a usage error');
}

describe('configPath', () => {
  it.each([
    [{ XDG_CONFIG_HOME: '/x/cfg', HOME: '/home/op' }, '/x/cfg/conductor/config.yaml'],
    [{ HOME: '/home/op' }, '/home/op/.config/conductor/config.yaml'],
    [{ XDG_CONFIG_HOME: '', HOME: '/home/op' }, '/home/op/.config/conductor/config.yaml'],
    // The XDG spec: a relative XDG_CONFIG_HOME is invalid and ignored.
    [{ XDG_CONFIG_HOME: 'rel/cfg', HOME: '/home/op' }, '/home/op/.config/conductor/config.yaml'],
  ])('%p -> %s', (env, path) => {
    expect(configPath(env)).toBe(path);
  });
});

describe('parseConfigText', () => {
  const parse = (text: string) => parseConfigText(text, '/c/config.yaml', 0o600, yaml);

  it('reads contexts and the current one', () => {
    const config = parse(
      '# mine\ncurrent: b\ncontexts:\n  a:\n    url: http://127.0.0.1:1\n  b:\n    url: https://127.0.0.2:2\n    ca: ca.pem\n    insecure: false\n',
    );
    expect(config.current).toEqual({ name: 'b', line: 2 });
    expect([...config.contexts.keys()]).toEqual(['a', 'b']);
    expect(config.contexts.get('b')).toEqual({ url: 'https://127.0.0.2:2', ca: 'ca.pem', insecure: false, line: 6 });
    expect(config.holdsToken).toBe(false);
  });

  it('reads an empty file, and empty keys, as no contexts', () => {
    for (const text of ['', '# nothing\n', 'contexts:\n', 'current:\ncontexts: {}\n']) {
      const config = parse(text);
      expect([config.current, config.contexts.size]).toEqual([undefined, 0]);
    }
  });

  it.each([
    ['not YAML', 'contexts:\n  a: [\n', '/c/config.yaml:3: not valid YAML'],
    [
      'a key twice',
      'contexts:\n  a: { url: "http://127.0.0.1:1" }\n  a: { url: "http://127.0.0.1:2" }\n',
      '/c/config.yaml:3: not valid YAML',
    ],
    ['a list', '- a\n', '/c/config.yaml:1: must be a mapping'],
    ['an unknown top-level key', 'contexts: {}\ncurent: a\n', '/c/config.yaml:2: unknown key "curent"'],
    [
      'an unknown context key',
      'contexts:\n  a:\n    url: http://127.0.0.1:1\n    tokenfile: x\n',
      '/c/config.yaml:4: context a: unknown key "tokenfile"',
    ],
    ['a context without url', 'contexts:\n  a:\n    ca: x\n', '/c/config.yaml:2: context a: url: is missing'],
    [
      'a url that is not http',
      'contexts:\n  a: { url: "ftp://127.0.0.1" }\n',
      '/c/config.yaml:2: context a: url: must be http:// or https://',
    ],
    ['a url that is not a URL', 'contexts:\n  a: { url: "127.0.0.1:5000" }\n', '/c/config.yaml:2: context a: url:'],
    [
      'a number for a path',
      'contexts:\n  a:\n    url: http://127.0.0.1:1\n    tokenFile: 12\n',
      '/c/config.yaml:4: context a, tokenFile: must be a string',
    ],
    [
      'a string for insecure',
      'contexts:\n  a:\n    url: https://127.0.0.1:1\n    insecure: "yes"\n',
      '/c/config.yaml:4: context a, insecure: true or false',
    ],
    [
      'a bad context name',
      'contexts:\n  "a b": { url: "http://127.0.0.1:1" }\n',
      '/c/config.yaml:2: context name "a b"',
    ],
    [
      'a context that is not a mapping',
      'contexts:\n  a: http://127.0.0.1:1\n',
      '/c/config.yaml:2: context a: must be a mapping',
    ],
    ['contexts as a list', 'contexts:\n  - a\n', '/c/config.yaml:2: contexts: must map names'],
    ['a current that is not a name', 'current: [a]\n', '/c/config.yaml:1: current: must be the name'],
    [
      'token and tokenFile',
      'contexts:\n  a: { url: "http://127.0.0.1:1", token: "t0123456789abcdef", tokenFile: x }\n',
      'token and tokenFile: give one',
    ],
    [
      'a token with a space',
      'contexts:\n  a: { url: "http://127.0.0.1:1", token: "a b" }\n',
      'token: only printable ASCII',
    ],
    ['cert without key', 'contexts:\n  a: { url: "https://127.0.0.1:1", cert: c.pem }\n', 'cert and key: give both'],
    [
      'a CA for an http URL',
      'contexts:\n  a: { url: "http://127.0.0.1:1", ca: ca.pem }\n',
      'apply to an https:// URL only',
    ],
  ])('refuses %s, naming the file and line', (_what, text, message) => {
    expect(usageMessage(() => parse(text))).toContain(message);
  });

  it('notes a file that holds a token', () => {
    expect(parse('contexts:\n  a: { url: "http://127.0.0.1:1", token: "t0123456789abcdef" }\n').holdsToken).toBe(true);
  });
});

describe('readConfigFile', () => {
  it('answers undefined for a missing file, and a usage error naming one it cannot read', async () => {
    expect(await readConfigFile(join(dir, 'missing.yaml'))).toBeUndefined();
    await mkdir(join(dir, 'a-folder.yaml'));
    expect(await usageMessageOf(readConfigFile(join(dir, 'a-folder.yaml')))).toBe(
      `${join(dir, 'a-folder.yaml')}: cannot read it (EISDIR)`,
    );
  });
});

describe('readTokenFile', () => {
  it('reads one token on one line; refuses anything else without showing it', async () => {
    const file = join(dir, 'token');
    const warnings: string[] = [];
    const warn = (text: string): void => {
      warnings.push(text);
    };
    await writeFile(file, 'secret-token-0123456789\n', { mode: 0o600 });
    await chmod(file, 0o600);
    expect(await readTokenFile(file, warn)).toBe('secret-token-0123456789');
    expect(warnings).toEqual([]);
    for (const text of ['', '\n', 'two tokens-0123456789\n', 'a-0123456789abcdef\nb-0123456789abcdef\n']) {
      await writeFile(file, text);
      const message = await usageMessageOf(readTokenFile(file, warn));
      expect(message).toBe(`token file ${file}: must hold one token on one line (printable ASCII, no spaces)`);
    }
    expect(await usageMessageOf(readTokenFile(join(dir, 'no-token'), warn))).toContain('(ENOENT)');
    await writeFile(file, 'secret-token-0123456789\n');
    await chmod(file, 0o644);
    expect(await readTokenFile(file, warn)).toBe('secret-token-0123456789');
    expect(warnings).toEqual([`token file ${file} can be read by other users (chmod 600 it)`]);
  });
});

describe('writing the file', () => {
  it('makes the folder 0700 and the file 0600, whatever the umask and the old mode', async () => {
    const path = join(dir, 'fresh', 'conductor', 'config.yaml');
    const old = process.umask(0);
    try {
      await addContext(
        undefined,
        path,
        { name: 'a', url: 'http://127.0.0.1:1', use: true, replace: false, cwd: dir },
        async () => 'x',
      );
    } finally {
      process.umask(old);
    }
    expect((await stat(join(dir, 'fresh'))).mode & 0o777).toBe(0o700);
    expect((await stat(join(dir, 'fresh', 'conductor'))).mode & 0o777).toBe(0o700);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    await chmod(path, 0o644);
    await useContext(await readConfigFile(path), path, undefined);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(await readFile(path, 'utf8')).not.toContain('current');
  });

  it('replaces the file atomically: a reader of the old file sees it whole, no temporary file stays', async () => {
    const folder = join(dir, 'atomic');
    await mkdir(folder);
    const path = join(folder, 'config.yaml');
    const before = 'contexts:\n  a:\n    url: http://127.0.0.1:1\n';
    await writeFile(path, before, { mode: 0o600 });
    const oldInode = (await stat(path)).ino;
    const reader = await open(path, 'r');
    try {
      const config = await readConfigFile(path);
      await addContext(
        config,
        path,
        { name: 'b', url: 'http://127.0.0.2:2', use: false, replace: false, cwd: dir },
        async () => 'x',
      );
      expect(await reader.readFile('utf8')).toBe(before);
    } finally {
      await reader.close();
    }
    expect((await stat(path)).ino).not.toBe(oldInode);
    expect(await readdir(folder)).toEqual(['config.yaml']);
    expect([...((await readConfigFile(path))?.contexts.keys() ?? [])]).toEqual(['a', 'b']);
  });

  it('fails naming the file, leaving nothing, when it cannot write', async () => {
    const blocker = join(dir, 'not-a-folder');
    await writeFile(blocker, 'x');
    const path = join(blocker, 'config.yaml');
    expect(await usageMessageOf(writeConfigFile(path, 'contexts: {}\n'))).toBe(`${path}: cannot write it (EEXIST)`);
    expect(await readFile(blocker, 'utf8')).toBe('x');
  });

  it('keeps a symbolic link and the comments of a hand-written file', async () => {
    const folder = join(dir, 'linked');
    await mkdir(folder);
    const real = join(folder, 'real.yaml');
    const path = join(folder, 'config.yaml');
    await writeFile(real, '# my daemons\ncontexts:\n  a:\n    url: http://127.0.0.1:1 # the local one\n', {
      mode: 0o600,
    });
    await symlink(real, path);
    await addContext(
      await readConfigFile(path),
      path,
      { name: 'b', url: 'http://127.0.0.2:2', use: true, replace: false, cwd: dir },
      async () => 'x',
    );
    expect((await lstat(path)).isSymbolicLink()).toBe(true);
    expect(await readlink(path)).toBe(real);
    const text = await readFile(real, 'utf8');
    expect(text).toContain('# my daemons');
    expect(text).toContain('# the local one');
    expect(text.startsWith('# my daemons\ncurrent: b\n')).toBe(true);
    const { config, wasCurrent } = await removeContext(await readConfigFile(path), path, 'b');
    expect(wasCurrent).toBe(true);
    expect([config.current, [...config.contexts.keys()]]).toEqual([undefined, ['a']]);
    expect(await readFile(real, 'utf8')).toContain('# the local one');
  });

  it('never writes what it could not read back', async () => {
    const config = parseConfigText('contexts: {}\n', join(dir, 'never.yaml'), 0o600, yaml);
    config.document.set('bogus', 1);
    expect(await usageMessageOf(saveConfigFile(config))).toContain('unknown key "bogus"');
    expect(await readConfigFile(join(dir, 'never.yaml'))).toBeUndefined();
  });
});

describe('context add', () => {
  const path = (): string => join(dir, 'add', 'config.yaml');
  const add = async (request: Partial<Parameters<typeof addContext>[2]>) =>
    addContext(
      await readConfigFile(path()),
      path(),
      { name: 'x', use: false, replace: false, cwd: dir, ...request },
      (file) => readTokenFile(file, () => undefined),
    );

  it('stores paths absolute, no token unless given one to inline, and refuses what it could not use', async () => {
    await writeFile(join(dir, 'add.token'), 'add-token-0123456789\n', { mode: 0o600 });
    await add({ name: 'a', url: 'http://127.0.0.1:1', tokenFile: 'add.token' });
    expect(await readFile(path(), 'utf8')).toContain(`tokenFile: ${join(dir, 'add.token')}`);
    expect(await readFile(path(), 'utf8')).not.toContain('add-token-0123456789');
    const before = await readFile(path(), 'utf8');
    for (const [request, message] of [
      [{ name: 'a', url: 'http://127.0.0.1:2' }, 'context a exists'],
      [{ name: 'b' }, 'needs --url'],
      [{ name: 'b c', url: 'http://127.0.0.1:2' }, 'context name "b c"'],
      [{ name: 'b', url: 'http://u:p@127.0.0.1:2' }, 'no user or password'],
      [
        { name: 'b', url: 'https://127.0.0.1:2', ca: 'missing.pem' },
        `ca ${join(dir, 'missing.pem')}: cannot read it (ENOENT)`,
      ],
      [{ name: 'b', url: 'http://127.0.0.1:2', cert: 'add.token', key: 'add.token' }, 'https:// URL only'],
      [{ name: 'b', url: 'http://127.0.0.1:2', tokenFile: 'missing.token' }, 'cannot read it'],
    ] as const) {
      expect(await usageMessageOf(add(request))).toContain(message);
    }
    expect(await readFile(path(), 'utf8')).toBe(before);
    await add({ name: 'a', url: 'http://127.0.0.1:3', inlineToken: 'inline-token-0123456789', replace: true });
    const config = await readConfigFile(path());
    expect(config?.contexts.get('a')).toMatchObject({ url: 'http://127.0.0.1:3', token: 'inline-token-0123456789' });
    expect(config?.contexts.get('a')?.tokenFile).toBeUndefined();
  });
});
