/**
 * `conductor context ls|show|use|add|rm`: the named daemons of the configuration file. These
 * commands read and edit the file only; none of them talks to a daemon. No command prints a token.
 */
import { access, constants } from 'node:fs/promises';
import { resolve } from 'node:path';
import { ConductorError, ErrorCode } from '@stream-conductor/shared';
import {
  CONTEXT_NAME,
  type ConfigFile,
  type ContextEntry,
  checkEntry,
  emptyConfig,
  loadYaml,
  resolvePath,
  saveConfigFile,
} from '../config-file.js';
import { contextNamed } from '../contexts.js';
import { safeForTerminal } from '../format.js';
import type { Output } from '../output.js';

/** A context as the commands show it: paths resolved, the token only as "there is one". */
export interface ContextView {
  name: string;
  /** The context a command would use now (--context, CONDUCTOR_CONTEXT or the current one). */
  current: boolean;
  url: string;
  tokenFile?: string;
  /** true when the file itself holds the token (`add --token-inline`). */
  tokenInFile: boolean;
  ca?: string;
  cert?: string;
  key?: string;
  insecure: boolean;
}

export function contextView(name: string, entry: ContextEntry, config: ConfigFile, home: string, inUse?: string) {
  const path = (value: string | undefined): string | undefined =>
    value === undefined ? undefined : resolvePath(value, config.path, home);
  const view: ContextView = {
    name,
    current: name === inUse,
    url: entry.url,
    tokenInFile: entry.token !== undefined,
    insecure: entry.insecure === true,
  };
  const tokenFile = path(entry.tokenFile);
  const ca = path(entry.ca);
  const cert = path(entry.cert);
  const key = path(entry.key);
  if (tokenFile !== undefined) view.tokenFile = tokenFile;
  if (ca !== undefined) view.ca = ca;
  if (cert !== undefined) view.cert = cert;
  if (key !== undefined) view.key = key;
  return view;
}

export function listContexts(config: ConfigFile | undefined, home: string, inUse?: string): ContextView[] {
  if (config === undefined) return [];
  return [...config.contexts].map(([name, entry]) => contextView(name, entry, config, home, inUse));
}

function tokenText(view: ContextView): string {
  if (view.tokenInFile) return 'in the config file';
  return view.tokenFile ?? '-';
}

function tlsText(view: ContextView): string {
  const parts: string[] = [];
  if (view.ca !== undefined) parts.push(`ca ${view.ca}`);
  if (view.cert !== undefined) parts.push(`cert ${view.cert}`);
  if (view.insecure) parts.push('insecure');
  return parts.length === 0 ? '-' : parts.join(', ');
}

export function printContextList(views: ContextView[], output: Output, quiet: boolean): void {
  if (quiet || output.format.name === 'name') {
    for (const view of views) output.out(view.name);
    return;
  }
  if (output.format.name === 'json' || output.format.name === 'yaml') {
    output.out(output.format.serialize(views));
    return;
  }
  const safe = safeForTerminal(views);
  if (safe.length === 0) {
    output.err('no contexts: add one with `conductor context add NAME --url URL`');
    return;
  }
  const rows = [
    ['CURRENT', 'NAME', 'URL', 'TOKEN', 'TLS'],
    ...safe.map((view) => [view.current ? '*' : '', view.name, view.url, tokenText(view), tlsText(view)]),
  ];
  const widths = rows[0]?.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? '').length))) ?? [];
  for (const row of rows)
    output.out(
      row
        .map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column] ?? 0)))
        .join('  ')
        .trimEnd(),
    );
}

export function printContext(view: ContextView, output: Output, file: string): void {
  if (output.format.name === 'json' || output.format.name === 'yaml') {
    output.out(output.format.serialize({ ...view, file }));
    return;
  }
  const safe = safeForTerminal(view);
  const lines: Array<[string, string]> = [
    ['name', `${safe.name}${safe.current ? ' (current)' : ''}`],
    ['url', safe.url],
    ['token', safe.tokenInFile ? 'in the config file (not shown)' : safe.tokenFile ? `from ${safe.tokenFile}` : 'none'],
  ];
  if (safe.ca !== undefined) lines.push(['ca', safe.ca]);
  if (safe.cert !== undefined) lines.push(['cert', safe.cert], ['key', safe.key ?? '']);
  if (safe.insecure)
    lines.push(['insecure', 'yes (https: the daemon is not verified; http: a token may leave loopback in clear)']);
  lines.push(['file', file]);
  for (const [label, value] of lines) output.out(`${`${label}:`.padEnd(10)}${value}`);
}

function usage(message: string, hint?: string): ConductorError {
  return new ConductorError(ErrorCode.Usage, message, { hint });
}

function checkName(name: string): void {
  if (!CONTEXT_NAME.test(name))
    throw usage(`context name ${JSON.stringify(name)}: 1 to 63 letters, digits and _ . - (a letter or digit first)`);
}

/** What `context add` was given; the global --url, --token-file, --ca... are the context's fields. */
export interface AddRequest {
  name: string;
  url?: string;
  tokenFile?: string;
  ca?: string;
  cert?: string;
  key?: string;
  insecure?: boolean;
  /** Store this token in the file itself (only with --token-inline). */
  inlineToken?: string;
  use: boolean;
  replace: boolean;
  cwd: string;
}

async function readable(path: string, what: string): Promise<string> {
  try {
    await access(path, constants.R_OK);
  } catch (error) {
    throw usage(`${what} ${path}: cannot read it (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  return path;
}

/** Adds (or with `replace`, replaces) a context; checks everything before the file is written. */
export async function addContext(
  config: ConfigFile | undefined,
  path: string,
  request: AddRequest,
  readToken: (file: string) => Promise<string>,
): Promise<ConfigFile> {
  checkName(request.name);
  if (request.url === undefined) throw usage('context add needs --url URL');
  if (config?.contexts.has(request.name) === true && !request.replace)
    throw usage(`context ${request.name} exists in ${path}`, 'give --replace to replace it, or pick another name');
  const entry: ContextEntry = { url: request.url };
  const absolute = (file: string): string => resolve(request.cwd, file);
  if (request.tokenFile !== undefined) {
    entry.tokenFile = absolute(request.tokenFile);
    await readToken(entry.tokenFile); // a token file that holds no usable token is refused now, not at the next call
  }
  if (request.inlineToken !== undefined) entry.token = request.inlineToken;
  if (request.ca !== undefined) entry.ca = await readable(absolute(request.ca), 'ca');
  if (request.cert !== undefined) entry.cert = await readable(absolute(request.cert), 'cert');
  if (request.key !== undefined) entry.key = await readable(absolute(request.key), 'key');
  if (request.insecure === true) entry.insecure = true;
  const problem = checkEntry(entry);
  if (problem !== undefined) throw usage(`context ${request.name}: ${problem}`);
  const url = new URL(entry.url);
  if (url.username !== '' || url.password !== '')
    throw usage(`context ${request.name}: url: no user or password in the URL (use --token-file)`);

  const edited = config ?? (await emptyConfig(path));
  const yaml = await loadYaml();
  const { document } = edited;
  if (!yaml.isMap(document.get('contexts', true))) document.set('contexts', document.createNode({}));
  document.setIn(['contexts', request.name], document.createNode(entry));
  if (request.use) setCurrent(edited, request.name, yaml);
  return saveConfigFile(edited);
}

function setCurrent(config: ConfigFile, name: string, yaml: Awaited<ReturnType<typeof loadYaml>>): void {
  const { document } = config;
  if (document.has('current')) {
    document.set('current', name);
    return;
  }
  // First in the file, where a reader looks for it.
  const root = document.contents;
  if (!yaml.isMap(root)) {
    document.set('current', name);
    return;
  }
  const pair = document.createPair('current', name);
  // A comment above the first key heads the file: it stays at the top.
  const first = root.items[0]?.key;
  if (yaml.isNode(first) && yaml.isNode(pair.key) && first.commentBefore) {
    pair.key.commentBefore = first.commentBefore;
    first.commentBefore = undefined;
  }
  root.items.unshift(pair);
}

/** Makes `name` the current context, or none (`--none`: the default URL again). */
export async function useContext(config: ConfigFile | undefined, path: string, name: string | undefined) {
  const yaml = await loadYaml();
  if (name === undefined) {
    if (config === undefined || !config.document.has('current')) return config;
    config.document.delete('current');
    return saveConfigFile(config);
  }
  contextNamed(config, name, path, 'context use');
  const edited = config as ConfigFile;
  setCurrent(edited, name, yaml);
  return saveConfigFile(edited);
}

/** Removes a context; if it was the current one, no context is current any more. */
export async function removeContext(config: ConfigFile | undefined, path: string, name: string) {
  contextNamed(config, name, path, 'context rm');
  const edited = config as ConfigFile;
  edited.document.deleteIn(['contexts', name]);
  const wasCurrent = edited.current?.name === name;
  if (wasCurrent) edited.document.delete('current');
  return { config: await saveConfigFile(edited), wasCurrent };
}
