/**
 * The CLI's configuration file, `$XDG_CONFIG_HOME/conductor/config.yaml` (default
 * `~/.config/conductor/config.yaml`): named daemons ("contexts") and the current one. Reading
 * checks every key and value and names the file and line of what is wrong; writing is atomic
 * (a temporary file renamed over the old one) with mode 0600, in a folder made with mode 0700.
 * Edits go through the parsed document, so the comments of a hand-written file survive them.
 */
import { mkdir, open, realpath, rename, unlink } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { ConductorError, ErrorCode, isTokenText } from '@stream-conductor/shared';
import type { Document, Node as YamlNode } from 'yaml';

/** One named daemon as the file holds it. Paths are as written (see `resolvePath`). */
export interface ContextEntry {
  url: string;
  /** A file holding the API token (one line). */
  tokenFile?: string;
  /** The token itself: written only when asked for (`context add --token-inline`). */
  token?: string;
  /** The CA certificate(s) to trust for an https:// URL. */
  ca?: string;
  /** A client certificate and its key, for a daemon that asks for one (mTLS). */
  cert?: string;
  key?: string;
  /** https: do not verify the daemon's certificate; http: send the token off loopback anyway. */
  insecure?: boolean;
}

export const CONTEXT_FIELDS = ['url', 'tokenFile', 'token', 'ca', 'cert', 'key', 'insecure'] as const;
const TOP_KEYS = ['current', 'contexts'] as const;

/** A context name: letters, digits and `_ . -`, as a shell word needs no quoting. */
export const CONTEXT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

export interface ConfigFile {
  path: string;
  /** The current context as the file names it (it may name none that exists), and its line. */
  current?: { name: string; line: number };
  contexts: Map<string, ContextEntry & { line: number }>;
  /** true when the file holds a token (`token:`): it must stay readable by its owner only. */
  holdsToken: boolean;
  /** The file's mode bits, to warn when others can read a file that holds a token. */
  mode: number;
  document: Document;
}

export interface ConfigLocation {
  XDG_CONFIG_HOME?: string;
  HOME?: string;
}

/** Where the file is: `$XDG_CONFIG_HOME/conductor/config.yaml`, else `~/.config/...`. */
export function configPath(env: ConfigLocation): string {
  // The XDG base directory spec: a relative XDG_CONFIG_HOME is invalid and is ignored.
  const xdg = env.XDG_CONFIG_HOME;
  const base = xdg !== undefined && xdg !== '' && isAbsolute(xdg) ? xdg : join(env.HOME || homedir(), '.config');
  return join(base, 'conductor', 'config.yaml');
}

/**
 * A path from the file: `~/` is the home folder; a relative path is relative to the file's own
 * folder (as kubeconfig does), so the file means the same from any working directory.
 */
export function resolvePath(path: string, file: string, home: string): string {
  if (path === '~' || path.startsWith('~/')) return join(home, path.slice(1));
  return resolve(dirname(file), path);
}

type Yaml = typeof import('yaml');

export async function loadYaml(): Promise<Yaml> {
  const yaml = await import('yaml');
  // Bundled, the CommonJS package may arrive as the default export of its namespace.
  return typeof yaml.parseDocument === 'function' ? yaml : (yaml as unknown as { default: Yaml }).default;
}

function fileError(path: string, line: number | undefined, message: string): ConductorError {
  return new ConductorError(ErrorCode.Usage, `${path}${line === undefined ? '' : `:${line}`}: ${message}`, {
    hint: 'fix the file, or bypass it with --url (the file is not read then)',
  });
}

/** Reads and checks the file; undefined when it does not exist. Any fault is a usage error (exit 2). */
export async function readConfigFile(path: string): Promise<ConfigFile | undefined> {
  let text: string;
  let mode = 0o600;
  try {
    const handle = await open(path, 'r');
    try {
      mode = (await handle.stat()).mode & 0o777;
      text = await handle.readFile('utf8');
    } finally {
      await handle.close();
    }
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    throw fileError(path, undefined, `cannot read it (${code ?? (error as Error).message})`);
  }
  return parseConfigText(text, path, mode, await loadYaml());
}

/** Checks the text of the file; exported for the unit tests. */
export function parseConfigText(text: string, path: string, mode: number, yaml: Yaml): ConfigFile {
  const lines = new yaml.LineCounter();
  const document = yaml.parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false });
  const first = document.errors[0];
  if (first !== undefined) {
    const line = first.linePos?.[0]?.line ?? lines.linePos(first.pos[0]).line;
    throw fileError(path, line, `not valid YAML: ${first.message.split('\n')[0]}`);
  }
  const config: ConfigFile = { path, contexts: new Map(), holdsToken: false, mode, document };
  const root = document.contents;
  if (root === null || (yaml.isScalar(root) && root.value === null)) return config;
  const lineOf = (node: YamlNode | null | undefined): number | undefined =>
    node?.range ? lines.linePos(node.range[0]).line : undefined;
  if (!yaml.isMap(root)) throw fileError(path, lineOf(root), 'must be a mapping with current: and contexts:');
  for (const pair of root.items) {
    const key = yaml.isScalar(pair.key) ? pair.key.value : undefined;
    const keyLine = lineOf(pair.key as YamlNode);
    if (key === 'current') {
      const value = pair.value;
      if (yaml.isScalar(value) && value.value === null) continue;
      if (!yaml.isScalar(value) || typeof value.value !== 'string' || !CONTEXT_NAME.test(value.value))
        throw fileError(path, lineOf(value as YamlNode) ?? keyLine, 'current: must be the name of a context');
      config.current = { name: value.value, line: lineOf(value) ?? keyLine ?? 1 };
    } else if (key === 'contexts') {
      readContexts(config, pair.value as YamlNode | null, keyLine, lineOf, yaml);
    } else {
      throw fileError(path, keyLine, `unknown key ${JSON.stringify(String(key))} (known: ${TOP_KEYS.join(', ')})`);
    }
  }
  return config;
}

function readContexts(
  config: ConfigFile,
  node: YamlNode | null,
  keyLine: number | undefined,
  lineOf: (node: YamlNode | null | undefined) => number | undefined,
  yaml: Yaml,
): void {
  const { path } = config;
  if (node === null || (yaml.isScalar(node) && node.value === null)) return;
  if (!yaml.isMap(node)) throw fileError(path, lineOf(node) ?? keyLine, 'contexts: must map names to contexts');
  for (const pair of node.items) {
    const name = yaml.isScalar(pair.key) ? pair.key.value : undefined;
    const line = lineOf(pair.key as YamlNode) ?? keyLine ?? 1;
    if (typeof name !== 'string' || !CONTEXT_NAME.test(name))
      throw fileError(path, line, `context name ${JSON.stringify(String(name))}: letters, digits and _ . - only`);
    const body = pair.value as YamlNode | null;
    if (!yaml.isMap(body)) throw fileError(path, lineOf(body) ?? line, `context ${name}: must be a mapping with url:`);
    const entry: Partial<ContextEntry> = {};
    for (const field of body.items) {
      const key = yaml.isScalar(field.key) ? field.key.value : undefined;
      const fieldLine = lineOf(field.key as YamlNode) ?? line;
      const value = field.value as YamlNode | null;
      const scalar = yaml.isScalar(value) ? value.value : undefined;
      const where = `context ${name}, ${String(key)}`;
      if (key === 'insecure') {
        if (typeof scalar !== 'boolean') throw fileError(path, fieldLine, `${where}: true or false`);
        entry.insecure = scalar;
      } else if (typeof key === 'string' && (CONTEXT_FIELDS as readonly string[]).includes(key)) {
        if (typeof scalar !== 'string' || scalar === '') throw fileError(path, fieldLine, `${where}: must be a string`);
        (entry as Record<string, string>)[key] = scalar;
      } else {
        throw fileError(
          path,
          fieldLine,
          `context ${name}: unknown key ${JSON.stringify(String(key))} (known: ${CONTEXT_FIELDS.join(', ')})`,
        );
      }
    }
    const problem = checkEntry(entry);
    if (problem !== undefined) throw fileError(path, line, `context ${name}: ${problem}`);
    if (entry.token !== undefined) config.holdsToken = true;
    config.contexts.set(name, { ...(entry as ContextEntry), line });
  }
}

/** What is wrong with a context as a whole (also used by `context add`), or undefined. */
export function checkEntry(entry: Partial<ContextEntry>): string | undefined {
  if (entry.url === undefined) return 'url: is missing';
  let url: URL;
  try {
    url = new URL(entry.url);
  } catch {
    return `url: not a URL: ${JSON.stringify(entry.url)}`;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    return `url: must be http:// or https://, got ${url.protocol}`;
  if (entry.token !== undefined && entry.tokenFile !== undefined) return 'token and tokenFile: give one, not both';
  if (entry.token !== undefined && !isTokenText(entry.token))
    return 'token: only printable ASCII characters without spaces';
  if ((entry.cert === undefined) !== (entry.key === undefined)) return 'cert and key: give both or neither';
  if (url.protocol === 'http:' && (entry.ca !== undefined || entry.cert !== undefined))
    return 'ca, cert and key apply to an https:// URL only';
  return undefined;
}

/** A new, empty document, for a file that does not exist yet. */
export async function emptyConfig(path: string): Promise<ConfigFile> {
  const yaml = await loadYaml();
  const document = new yaml.Document({ contexts: {} });
  document.commentBefore = ' conductor contexts: conductor context add | use | rm | ls (see conductor context --help)';
  return { path, contexts: new Map(), holdsToken: false, mode: 0o600, document };
}

/**
 * Writes the document atomically: a new file (mode 0600) beside the target, synced, renamed over
 * it. A symbolic link at the path (a dotfiles manager's) is kept: its target is replaced.
 */
export async function writeConfigFile(path: string, text: string): Promise<void> {
  try {
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    let target = path;
    try {
      target = await realpath(path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    const { randomBytes } = await import('node:crypto');
    const temp = join(dirname(target), `.${basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
    // 'wx': never follows or reuses something already at the temporary name.
    const handle = await open(temp, 'wx', 0o600);
    try {
      await handle.chmod(0o600); // whatever the umask
      await handle.writeFile(text);
      await handle.sync();
    } catch (error) {
      await handle.close();
      await unlink(temp);
      throw error;
    }
    await handle.close();
    try {
      await rename(temp, target);
    } catch (error) {
      await unlink(temp);
      throw error;
    }
  } catch (error) {
    if (error instanceof ConductorError) throw error;
    throw fileError(path, undefined, `cannot write it (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
}

/** Writes an edited document; what it writes is read back first, so the file is never left unreadable. */
export async function saveConfigFile(config: ConfigFile): Promise<ConfigFile> {
  const yaml = await loadYaml();
  const text = config.document.toString({ lineWidth: 0 });
  const checked = parseConfigText(text, config.path, 0o600, yaml);
  await writeConfigFile(config.path, text);
  return checked;
}
