// @ts-check
/**
 * What the soak reads of the daemon's host: a process's memory and descriptors, the nginx
 * processes of a home, and the files the daemon keeps in its home.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

export const PREFIX = '_conductor_';

/** @param {number} pid */
export async function rssKiB(pid) {
  try {
    const match = /VmRSS:\s+([0-9]+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) : 0;
  } catch {
    return 0;
  }
}

/** @param {number} pid */
export async function fdCount(pid) {
  try {
    return (await readdir(`/proc/${pid}/fd`)).length;
  } catch {
    return NaN;
  }
}

/** @param {string} text */
export const escapeRegExp = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * The nginx processes of this soak's home: the masters whose command line names one of its
 * `nginx/<n>/nginx.conf` (managed mode runs one master per slice of the port range), and their
 * children (the workers, old generations still shutting down included).
 * @param {string} home
 */
export async function nginxProcesses(home) {
  const conf = new RegExp(` -c ${escapeRegExp(join(home, 'nginx'))}/[0-9]+/nginx\\.conf( |$)`);
  /** @type {Array<{ pid: number, ppid: number, cmd: string }>} */
  const all = [];
  for (const entry of await readdir('/proc')) {
    if (!/^[0-9]+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const cmd = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).replace(/\0+$/, '').replace(/\0/g, ' ');
      all.push({ pid: Number(entry), ppid, cmd });
    } catch {
      // gone meanwhile
    }
  }
  const masters = all.filter((p) => p.cmd.startsWith('nginx: master process') && conf.test(p.cmd)).map((p) => p.pid);
  const workers = all.filter((p) => masters.includes(p.ppid)).map((p) => p.pid);
  return { masters, workers };
}

/**
 * A folder holding one numbered folder per nginx master (`stream.d/` and `nginx/` in managed
 * mode): the numbers, sorted, and the names of everything else in it.
 * @param {string} dir
 */
export async function perMasterFolders(dir) {
  const entries = await readdir(dir, { withFileTypes: true }).catch(
    () => /** @type {import('node:fs').Dirent[]} */ ([]),
  );
  /** @type {number[]} */
  const ids = [];
  /** @type {string[]} */
  const others = [];
  for (const entry of entries) {
    if (entry.isDirectory() && /^[0-9]+$/.test(entry.name)) ids.push(Number(entry.name));
    else others.push(entry.name);
  }
  return { ids: ids.sort((a, b) => a - b), others };
}

/**
 * What one stream's text tells nginx, read whatever its layout (comments, an
 * upstream block, buffer and access_log lines): how many `server {}` blocks it has, the listen
 * directives of the first one, where it proxies to (the address of `proxy_pass`, or the `server`
 * addresses of the upstream block it names, joined with ", "), and its access log.
 * @param {string} text
 * @returns {{ servers: number, listens: string[], backend: string | undefined, accessLog: string | undefined }}
 */
export function parseStreamFile(text) {
  const body = text
    .split('\n')
    .filter((line) => !/^\s*#/.test(line))
    .join('\n');
  /** @type {Map<string, string[]>} */
  const upstreams = new Map();
  for (const match of body.matchAll(/(?:^|[;}\s])upstream\s+([^\s{]+)\s*\{([^{}]*)\}/g)) {
    upstreams.set(
      match[1] ?? '',
      [...(match[2] ?? '').matchAll(/(?:^|[;\s])server\s+([^\s;]+)[^;]*;/g)].map((server) => server[1] ?? ''),
    );
  }
  const servers = [...body.matchAll(/(?:^|[;}\s])server\s*\{([^{}]*)\}/g)].map((match) => match[1] ?? '');
  const server = servers[0] ?? '';
  /** @param {string} name */
  const directive = (name) =>
    [...server.matchAll(new RegExp(`(?:^|[;\\s])${name}\\s+([^;]*);`, 'g'))].map((match) => (match[1] ?? '').trim());
  const target = directive('proxy_pass')[0];
  return {
    servers: servers.length,
    listens: directive('listen'),
    backend: target === undefined ? undefined : (upstreams.get(target)?.join(', ') ?? target),
    accessLog: directive('access_log')[0]?.split(/\s+/)[0],
  };
}

/**
 * The files the daemon keeps in its home in managed mode, besides the temporary `.tmp-*` ones
 * of an atomic write (checked on their own) and the soak's daemon.log.
 * @param {string} where `home`, `nginx/<n>` or `stream.d/<n>`
 * @param {string} name
 */
export function expectedInHome(where, name) {
  if (where === 'home')
    return ['daemon.log', 'daemon.pid', 'streams.json', 'audit.log', 'audit.log.1', 'nginx', 'stream.d'].includes(name);
  if (where === 'nginx/<n>')
    return ['nginx.conf', 'nginx.pid', 'error.log', 'access.log'].includes(name) || /^access\.log\.[0-9]+$/.test(name);
  return name === `${PREFIX}streams.conf`;
}
