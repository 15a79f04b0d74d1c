/**
 * Which daemon a command talks to, and with what: the URL, the token and the TLS files, from the
 * command line, the environment, a context of the configuration file, or the default.
 *
 * Per value, the first that is set wins:
 *   URL:   --url; --context NAME; CONDUCTOR_URL; CONDUCTOR_CONTEXT; the file's current context; the default.
 *   token: --token; --token-file; the tokenFile (or token) of a context named by --context;
 *          CONDUCTOR_TOKEN; the chosen context's tokenFile (or token).
 *   TLS:   the flags; the chosen context's ca, cert, key and insecure.
 * A URL from --url or CONDUCTOR_URL means no context at all: the file is not even read.
 */
import { open } from 'node:fs/promises';
import { ConductorError, ErrorCode, isTokenText } from '@stream-conductor/shared';
import type { ClientOptions } from './client.js';
import type { ConfigFile, ContextEntry } from './config-file.js';
import { CONTEXT_NAME, resolvePath } from './config-file.js';
import { transportFor } from './transport.js';

export const DEFAULT_URL = 'http://127.0.0.1:5000';

/** What the command line says (undefined: not given). */
export interface TargetFlags {
  url?: string;
  token?: string;
  tokenFile?: string;
  context?: string;
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  insecure?: boolean;
}

/** The variables that choose the daemon, read once at start-up. An empty value counts as unset. */
export interface TargetEnv {
  CONDUCTOR_URL?: string;
  CONDUCTOR_TOKEN?: string;
  CONDUCTOR_CONTEXT?: string;
}

export type UrlSource = 'flag' | 'env' | 'context' | 'default';

/** The daemon a command talks to. */
export interface Target {
  url: string;
  token?: string;
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  insecure?: boolean;
  /** The context whose values were used, if any. */
  context?: string;
  urlFrom: UrlSource;
}

export interface TargetDeps {
  /** Reads the configuration file (undefined when there is none); called only when needed. */
  load(): Promise<ConfigFile | undefined>;
  /** The path of the file, for messages, without reading it. */
  path: string;
  home: string;
  /** Reads a token file (a one-line token); a usage error names the file when it cannot. */
  readToken(file: string): Promise<string>;
}

const given = (value: string | undefined): string | undefined =>
  value === undefined || value === '' ? undefined : value;

function usage(message: string, hint?: string): ConductorError {
  return new ConductorError(ErrorCode.Usage, message, { hint });
}

function checkUrl(text: string, what: string): string {
  try {
    const url = new URL(text);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('not http');
    return url.href;
  } catch {
    throw usage(`${what} must be an http:// or https:// URL, got ${JSON.stringify(text)}`);
  }
}

/** The names a file defines, for an error message. */
function known(config: ConfigFile | undefined): string {
  const names = [...(config?.contexts.keys() ?? [])];
  return names.length === 0 ? 'it defines none' : `known: ${names.join(', ')}`;
}

/** The context called `name`, or a usage error that lists the known ones. */
export function contextNamed(
  config: ConfigFile | undefined,
  name: string,
  path: string,
  why: string,
): ContextEntry & { line: number } {
  if (!CONTEXT_NAME.test(name)) throw usage(`${why}: ${JSON.stringify(name)} is not a context name`);
  const entry = config?.contexts.get(name);
  if (entry === undefined) {
    throw usage(
      `${why}: no context named ${name} in ${config === undefined ? `${path} (no such file)` : `${path} (${known(config)})`}`,
      'list them with `conductor context ls`, add one with `conductor context add NAME --url URL`',
    );
  }
  return entry;
}

/** The context chosen by --context, CONDUCTOR_CONTEXT or the file's current one, if any. */
export async function chosenContext(
  flags: Pick<TargetFlags, 'context'>,
  env: TargetEnv,
  deps: Pick<TargetDeps, 'load' | 'path'>,
): Promise<{ name: string; entry: ContextEntry; config: ConfigFile } | undefined> {
  const byFlag = flags.context;
  const byEnv = given(env.CONDUCTOR_CONTEXT);
  const config = await deps.load();
  if (byFlag !== undefined || byEnv !== undefined) {
    const name = byFlag ?? byEnv ?? '';
    const entry = contextNamed(config, name, deps.path, byFlag !== undefined ? '--context' : 'CONDUCTOR_CONTEXT');
    return { name, entry, config: config as ConfigFile };
  }
  if (config?.current === undefined) return undefined;
  const { name, line } = config.current;
  const entry = contextNamed(config, name, `${deps.path}:${line}`, 'current context');
  return { name, entry, config };
}

/** Resolves the target of a command (see the table at the top of this file). */
export async function targetFor(flags: TargetFlags, env: TargetEnv, deps: TargetDeps): Promise<Target> {
  if (flags.url !== undefined && flags.context !== undefined)
    throw usage('--url and --context both name a daemon: give one');
  if (flags.token !== undefined && flags.tokenFile !== undefined)
    throw usage('--token and --token-file both give the token: give one');

  let url: string;
  let urlFrom: UrlSource;
  let chosen: { name: string; entry: ContextEntry; config: ConfigFile } | undefined;
  const envUrl = given(env.CONDUCTOR_URL);
  if (flags.url !== undefined) {
    url = checkUrl(flags.url, '--url');
    urlFrom = 'flag';
  } else if (flags.context === undefined && envUrl !== undefined) {
    url = checkUrl(envUrl, 'CONDUCTOR_URL');
    urlFrom = 'env';
  } else {
    chosen = await chosenContext(flags, env, deps);
    url = chosen?.entry.url ?? DEFAULT_URL;
    urlFrom = chosen === undefined ? 'default' : 'context';
  }
  const entry = chosen?.entry;
  const fromFile = (path: string | undefined): string | undefined =>
    path === undefined || chosen === undefined ? undefined : resolvePath(path, chosen.config.path, deps.home);

  const contextToken = async (): Promise<string | undefined> => {
    if (entry?.token !== undefined) return entry.token;
    if (entry?.tokenFile !== undefined) return deps.readToken(fromFile(entry.tokenFile) ?? '');
    return undefined;
  };
  // A context named by --context brings its own token before CONDUCTOR_TOKEN, as its URL comes
  // before CONDUCTOR_URL: a token exported for one daemon is not sent to the one the flag names.
  const flagContextHasToken = flags.context !== undefined && (entry?.token ?? entry?.tokenFile) !== undefined;
  let token: string | undefined;
  if (flags.token !== undefined) token = given(flags.token);
  else if (flags.tokenFile !== undefined) token = await deps.readToken(flags.tokenFile);
  else if (flagContextHasToken) token = await contextToken();
  else if (given(env.CONDUCTOR_TOKEN) !== undefined) token = env.CONDUCTOR_TOKEN;
  else token = await contextToken();
  if (token !== undefined && !isTokenText(token)) {
    throw usage(
      'the token may hold only printable ASCII characters without spaces',
      'tokens are set with CONDUCTOR_TOKEN on the daemon; copy it exactly',
    );
  }

  const target: Target = { url, urlFrom };
  if (token !== undefined) target.token = token;
  if (chosen !== undefined) target.context = chosen.name;
  const caFile = flags.caFile ?? fromFile(entry?.ca);
  const certFile = flags.certFile ?? fromFile(entry?.cert);
  const keyFile = flags.keyFile ?? fromFile(entry?.key);
  if (caFile !== undefined) target.caFile = caFile;
  if (certFile !== undefined) target.certFile = certFile;
  if (keyFile !== undefined) target.keyFile = keyFile;
  if (flags.insecure === true || entry?.insecure === true) target.insecure = true;
  return target;
}

/**
 * A token file: one token on one line (a final newline is fine). Never echoes what it holds.
 * `warn` is told when other users can read the file.
 */
export async function readTokenFile(path: string, warn: (text: string) => void): Promise<string> {
  let text: string;
  try {
    const handle = await open(path, 'r');
    try {
      if (((await handle.stat()).mode & 0o004) !== 0)
        warn(`token file ${path} can be read by other users (chmod 600 it)`);
      text = await handle.readFile('utf8');
    } finally {
      await handle.close();
    }
  } catch (error) {
    throw usage(`token file ${path}: cannot read it (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const lines = text.split('\n').filter((line) => line.trim() !== '');
  const token = lines[0]?.trim() ?? '';
  if (lines.length !== 1 || !isTokenText(token))
    throw usage(`token file ${path}: must hold one token on one line (printable ASCII, no spaces)`);
  return token;
}

/**
 * The one place where a target becomes the client's options: the token and, for an https:// URL,
 * the TLS files (CA, client certificate and key) and whether to verify the daemon at all, checked
 * by transportFor before anything is sent. Its warnings (nothing verified, a token in clear text)
 * go to `warn`.
 */
export function clientOptionsFor(target: Target, warn: (text: string) => void): ClientOptions {
  const transport = transportFor({
    url: target.url,
    token: target.token,
    caFile: target.caFile,
    certFile: target.certFile,
    keyFile: target.keyFile,
    insecure: target.insecure,
  });
  for (const warning of transport.warnings) warn(warning);
  return { url: target.url, token: target.token, tls: transport.tls };
}
