/**
 * Which daemon a command talks to: the precedence of flags, variables, the chosen context, the
 * current context and the default, value by value; and that the file is read only when needed.
 */
import { describe, expect, it } from '@jest/globals';
import { ConductorError, ErrorCode } from '@stream-conductor/shared';
import * as yaml from 'yaml';
import { type ConfigFile, parseConfigText } from '../src/config-file.js';
import {
  clientOptionsFor,
  DEFAULT_URL,
  type TargetDeps,
  type TargetEnv,
  type TargetFlags,
  targetFor,
} from '../src/contexts.js';

const FILE = '/home/op/.config/conductor/config.yaml';
const TEXT = `
current: a
contexts:
  a:
    url: http://127.0.0.1:5001
    tokenFile: a.token
  b:
    url: https://127.0.0.2:5443
    tokenFile: ~/tokens/b
    ca: /etc/conductor/ca.pem
    cert: certs/client.pem
    key: certs/client.key
  c:
    url: http://127.0.0.3:5003
    token: inline-token-0123456789
`;

/** A fake file system (null: no config file): the config file and token files; it counts how often the file is read. */
function deps(text: string | null = TEXT): TargetDeps & { reads: number } {
  const tokens: Record<string, string> = {
    '/home/op/.config/conductor/a.token': 'token-of-a-0123456789',
    '/home/op/tokens/b': 'token-of-b-0123456789',
    '/tmp/flag.token': 'token-of-flag-file-0123',
  };
  const fake = {
    reads: 0,
    path: FILE,
    home: '/home/op',
    load: async (): Promise<ConfigFile | undefined> => {
      fake.reads += 1;
      return text === null ? undefined : parseConfigText(text, FILE, 0o600, yaml);
    },
    readToken: async (file: string): Promise<string> => {
      const token = tokens[file];
      if (token === undefined) throw new ConductorError(ErrorCode.Usage, `token file ${file}: cannot read it (ENOENT)`);
      return token;
    },
  };
  return fake;
}

/** A file that must not be read: reading it fails the call. */
function unreadable(): TargetDeps & { reads: number } {
  const fake = deps();
  fake.load = async () => {
    fake.reads += 1;
    throw new ConductorError(ErrorCode.Usage, `${FILE}:1: not valid YAML`);
  };
  return fake;
}

async function usageError(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(ConductorError);
    expect((error as ConductorError).code).toBe(ErrorCode.Usage);
    return (error as ConductorError).message;
  }
  throw new Error('expected a usage error');
}

const FLAG_URL = 'http://127.0.0.9:5009/';
const ENV_URL = 'http://127.0.0.8:5008/';

describe('targetFor: the URL and the context', () => {
  it.each<[string, TargetFlags, TargetEnv, string, string | undefined]>([
    ['the current context', {}, {}, 'http://127.0.0.1:5001', 'a'],
    [
      '--url over everything',
      { url: FLAG_URL },
      { CONDUCTOR_URL: ENV_URL, CONDUCTOR_CONTEXT: 'b' },
      FLAG_URL,
      undefined,
    ],
    ['CONDUCTOR_URL over the current context', {}, { CONDUCTOR_URL: ENV_URL }, ENV_URL, undefined],
    [
      'CONDUCTOR_URL over CONDUCTOR_CONTEXT',
      {},
      { CONDUCTOR_URL: ENV_URL, CONDUCTOR_CONTEXT: 'b' },
      ENV_URL,
      undefined,
    ],
    [
      '--context over CONDUCTOR_URL (a flag over a variable)',
      { context: 'c' },
      { CONDUCTOR_URL: ENV_URL },
      'http://127.0.0.3:5003',
      'c',
    ],
    ['--context over CONDUCTOR_CONTEXT', { context: 'c' }, { CONDUCTOR_CONTEXT: 'b' }, 'http://127.0.0.3:5003', 'c'],
    ['CONDUCTOR_CONTEXT over the current context', {}, { CONDUCTOR_CONTEXT: 'c' }, 'http://127.0.0.3:5003', 'c'],
    ['empty variables count as unset', {}, { CONDUCTOR_URL: '', CONDUCTOR_CONTEXT: '' }, 'http://127.0.0.1:5001', 'a'],
  ])('%s', async (_what, flags, env, url, context) => {
    const target = await targetFor(flags, env, deps());
    expect(target.url).toBe(url);
    expect(target.context).toBe(context);
  });

  it('uses the default URL without a file, or with a file that names no current context', async () => {
    expect(await targetFor({}, {}, deps(null))).toEqual({ url: DEFAULT_URL, urlFrom: 'default' });
    expect(await targetFor({}, {}, deps('contexts:\n  a: { url: "http://127.0.0.1:1" }\n'))).toEqual({
      url: DEFAULT_URL,
      urlFrom: 'default',
    });
    expect(await targetFor({}, {}, deps(''))).toEqual({ url: DEFAULT_URL, urlFrom: 'default' });
  });

  it('does not read the file at all when --url or CONDUCTOR_URL gives the URL', async () => {
    const byFlag = unreadable();
    expect((await targetFor({ url: FLAG_URL }, { CONDUCTOR_CONTEXT: 'b' }, byFlag)).url).toBe(FLAG_URL);
    const byEnv = unreadable();
    expect((await targetFor({}, { CONDUCTOR_URL: ENV_URL, CONDUCTOR_CONTEXT: 'b' }, byEnv)).url).toBe(ENV_URL);
    expect([byFlag.reads, byEnv.reads]).toEqual([0, 0]);
    // Otherwise the file is read, and its faults stop the command.
    const needed = unreadable();
    expect(await usageError(targetFor({}, {}, needed))).toContain(`${FILE}:1`);
    expect(needed.reads).toBe(1);
  });

  it('refuses an unknown context naming the known ones, and a current context that is not defined', async () => {
    expect(await usageError(targetFor({ context: 'zz' }, {}, deps()))).toBe(
      `--context: no context named zz in ${FILE} (known: a, b, c)`,
    );
    expect(await usageError(targetFor({}, { CONDUCTOR_CONTEXT: 'zz' }, deps()))).toContain(
      'CONDUCTOR_CONTEXT: no context named zz',
    );
    expect(await usageError(targetFor({ context: 'a' }, {}, deps(null)))).toBe(
      `--context: no context named a in ${FILE} (no such file)`,
    );
    expect(await usageError(targetFor({ context: '../x' }, {}, deps()))).toContain('is not a context name');
    const dangling = deps('current: gone\ncontexts:\n  a: { url: "http://127.0.0.1:1" }\n');
    expect(await usageError(targetFor({}, {}, dangling))).toBe(
      `current context: no context named gone in ${FILE}:1 (known: a)`,
    );
  });

  it('refuses --url with --context, and --token with --token-file', async () => {
    expect(await usageError(targetFor({ url: FLAG_URL, context: 'a' }, {}, deps()))).toContain('give one');
    expect(await usageError(targetFor({ token: 'x'.repeat(16), tokenFile: '/tmp/flag.token' }, {}, deps()))).toContain(
      'give one',
    );
  });

  it('refuses a URL that is not http(s), saying where it came from', async () => {
    expect(await usageError(targetFor({ url: 'ftp://x' }, {}, deps()))).toBe(
      '--url must be an http:// or https:// URL, got "ftp://x"',
    );
    expect(await usageError(targetFor({}, { CONDUCTOR_URL: 'not a url' }, deps()))).toBe(
      'CONDUCTOR_URL must be an http:// or https:// URL, got "not a url"',
    );
  });
});

describe('targetFor: the token', () => {
  it.each<[string, TargetFlags, TargetEnv, string | undefined]>([
    ["the current context's token file (relative to the config file)", {}, {}, 'token-of-a-0123456789'],
    ["a chosen context's token file (~ is the home folder)", { context: 'b' }, {}, 'token-of-b-0123456789'],
    ['a token written in the file', { context: 'c' }, {}, 'inline-token-0123456789'],
    [
      'CONDUCTOR_TOKEN over the current context',
      {},
      { CONDUCTOR_TOKEN: 'env-token-0123456789' },
      'env-token-0123456789',
    ],
    [
      'CONDUCTOR_TOKEN over a context CONDUCTOR_CONTEXT names',
      {},
      { CONDUCTOR_CONTEXT: 'b', CONDUCTOR_TOKEN: 'env-token-0123456789' },
      'env-token-0123456789',
    ],
    [
      'the token file of the context --context names over CONDUCTOR_TOKEN',
      { context: 'b' },
      { CONDUCTOR_TOKEN: 'env-token-0123456789' },
      'token-of-b-0123456789',
    ],
    [
      '--token-file over CONDUCTOR_TOKEN',
      { tokenFile: '/tmp/flag.token' },
      { CONDUCTOR_TOKEN: 'env-token-0123456789' },
      'token-of-flag-file-0123',
    ],
    [
      '--token over everything',
      { token: 'flag-token-0123456789', context: 'c' },
      { CONDUCTOR_TOKEN: 'env-token-0123456789' },
      'flag-token-0123456789',
    ],
    ['no token with --url and nothing else', { url: FLAG_URL }, {}, undefined],
    [
      'CONDUCTOR_TOKEN with CONDUCTOR_URL',
      {},
      { CONDUCTOR_URL: ENV_URL, CONDUCTOR_TOKEN: 'env-token-0123456789' },
      'env-token-0123456789',
    ],
    ["no context's token with CONDUCTOR_URL", {}, { CONDUCTOR_URL: ENV_URL }, undefined],
    ['an empty --token is none', { token: '' }, { CONDUCTOR_TOKEN: 'env-token-0123456789' }, undefined],
  ])('%s', async (_what, flags, env, token) => {
    expect((await targetFor(flags, env, deps())).token).toBe(token);
  });

  it('refuses a token that cannot go into a header, and a token file it cannot read', async () => {
    expect(await usageError(targetFor({ token: 'a b' }, {}, deps()))).toContain('printable ASCII');
    expect(await usageError(targetFor({ tokenFile: '/tmp/missing' }, {}, deps()))).toContain('/tmp/missing');
    const missing = deps('current: a\ncontexts:\n  a: { url: "http://127.0.0.1:1", tokenFile: /nowhere/t }\n');
    expect(await usageError(targetFor({}, {}, missing))).toContain('token file /nowhere/t');
  });
});

describe('targetFor: TLS values', () => {
  it("carries the chosen context's CA and client certificate, resolved; flags win", async () => {
    expect(await targetFor({ context: 'b' }, {}, deps())).toEqual({
      url: 'https://127.0.0.2:5443',
      urlFrom: 'context',
      context: 'b',
      token: 'token-of-b-0123456789',
      caFile: '/etc/conductor/ca.pem',
      certFile: '/home/op/.config/conductor/certs/client.pem',
      keyFile: '/home/op/.config/conductor/certs/client.key',
    });
    const flags = { context: 'b', caFile: '/tmp/ca2.pem', insecure: true };
    expect(await targetFor(flags, {}, deps())).toMatchObject({ caFile: '/tmp/ca2.pem', insecure: true });
    // A URL from the command line takes nothing from a context.
    const bare = await targetFor({ url: 'https://127.0.0.2:5443' }, { CONDUCTOR_CONTEXT: 'b' }, deps());
    expect(bare).toEqual({ url: 'https://127.0.0.2:5443/', urlFrom: 'flag' });
  });

  it('hands the URL, the token and the TLS settings to the client, checked first', () => {
    const warnings: string[] = [];
    const warn = (text: string): void => {
      warnings.push(text);
    };
    const token = 't'.repeat(16);
    expect(clientOptionsFor({ url: 'http://127.0.0.1:1/', urlFrom: 'flag', token }, warn)).toEqual({
      url: 'http://127.0.0.1:1/',
      token,
      tls: undefined,
    });
    expect(clientOptionsFor({ url: 'https://127.0.0.1:1/', urlFrom: 'context', insecure: true }, warn).tls).toEqual({
      rejectUnauthorized: false,
    });
    expect(warnings).toEqual([expect.stringContaining('is not verified')]);
    // A context's token is never sent in clear text off loopback unless it says insecure.
    expect(() => clientOptionsFor({ url: 'http://192.0.2.1:1/', urlFrom: 'context', token }, warn)).toThrow(
      /refusing to send the API token in clear text/,
    );
  });
});
