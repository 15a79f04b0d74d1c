// @ts-check
/**
 * Each view of the live streams against the model once a phase is idle: the daemon's listing,
 * the stream files of every master, the store, and the home holding nothing else.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expectedInHome, PREFIX, parseStreamFile } from './host.mjs';
import { portList } from './util.mjs';

/** @typedef {import('./state.mjs').Phase} Phase */
/** @typedef {import('./state.mjs').Soak} Soak */

/**
 * @param {Soak} soak
 * Compares one view of the live streams with the model.
 * @param {Phase} phase
 * @param {string} check
 * @param {Map<number, string | undefined>} actual port -> backend (undefined: not known by this view)
 * @param {Map<number, string>} expected
 */
export function compare(soak, phase, check, actual, expected) {
  const missing = [...expected.keys()].filter((port) => !actual.has(port));
  const extra = [...actual.keys()].filter((port) => !expected.has(port));
  const wrong = [...expected.entries()]
    .filter(([port, backend]) => actual.has(port) && actual.get(port) !== undefined && actual.get(port) !== backend)
    .map(([port]) => port);
  if (missing.length + extra.length + wrong.length === 0) return true;
  const parts = [];
  if (missing.length) parts.push(`missing ${portList(missing)}`);
  if (extra.length) parts.push(`unexpected ${portList(extra)}`);
  if (wrong.length) parts.push(`wrong backend on ${portList(wrong)}`);
  soak.fail(phase, check, `${check} disagrees with the acknowledged answers: ${parts.join('; ')}`);
  return false;
}

/**
 * @param {Soak} soak
 * The stream files: each master n includes its own folder stream.d/<n>/, whose one file holds
 * its streams. A port's text must be in exactly one of them, listen on 127.0.0.1:<port> only,
 * proxy to the right backend and log to the access log of its own master.
 * @param {Phase} phase
 * @param {number[]} ids the masters' folders under stream.d/
 * @param {Map<number, string>} expected
 */
export async function checkStreamFiles(soak, phase, ids, expected) {
  const { daemon } = soak;
  const streamRoot = join(daemon.home, 'stream.d');
  const nginxRoot = join(daemon.home, 'nginx');
  /** @type {Map<number, string | undefined>} */
  const files = new Map();
  /** @type {Map<number, number>} port -> the master folder its file is in */
  const folderOf = new Map();
  /** @type {string[]} */
  const fileProblems = [];
  // Each master's streams are in one file, each stream's text starting with its marker line.
  const bundleName = `${PREFIX}streams.conf`;
  for (const id of ids) {
    const folder = join(streamRoot, String(id));
    const bundle = await readFile(join(folder, bundleName), 'utf8').catch(() => '');
    for (const text of bundle.split(/^(?=# stream-conductor: port )/m).slice(1)) {
      const port = Number(/^# stream-conductor: port ([0-9]+) /.exec(text)?.[1]);
      const where = `stream.d/${id}/${bundleName}, port ${port}`;
      const parsed = parseStreamFile(text);
      if (parsed.servers !== 1 || parsed.listens.length !== 1 || parsed.listens[0] !== `127.0.0.1:${port}`) {
        fileProblems.push(
          `${where} does not listen on 127.0.0.1:${port} alone (${parsed.servers} server blocks, listen ${parsed.listens.join(' / ') || 'none'}): ${JSON.stringify(text.slice(0, 400))}`,
        );
      }
      const accessLog = join(nginxRoot, String(id), 'access.log');
      if (parsed.accessLog !== undefined && parsed.accessLog !== accessLog)
        fileProblems.push(`${where} logs to ${parsed.accessLog}, not to its master's ${accessLog}`);
      const other = folderOf.get(port);
      if (other !== undefined)
        fileProblems.push(`port ${port} is in the file of stream.d/${other}/ and of stream.d/${id}/`);
      folderOf.set(port, id);
      files.set(port, parsed.backend ?? '(no proxy_pass)');
    }
  }
  for (const problem of fileProblems.slice(0, 20)) soak.fail(phase, 'stream.d', problem);
  if (fileProblems.length > 20)
    soak.fail(phase, 'stream.d', `... and ${fileProblems.length - 20} more problems with the stream files`);
  return compare(soak, phase, 'stream.d', files, expected) && fileProblems.length === 0;
}

/**
 * @param {Soak} soak
 * The store, streams.json: format 1, each port once, each with the expected backend.
 * @param {Phase} phase
 * @param {Map<number, string>} expected
 */
export async function checkStore(soak, phase, expected) {
  const storeText = await readFile(join(soak.daemon.home, 'streams.json'), 'utf8').catch(() => '');
  /** @type {Map<number, string | undefined>} */
  const stored = new Map();
  let storeOk = true;
  try {
    const data =
      /** @type {{ format?: unknown, streams?: Array<{ port?: unknown, backends?: Array<{ address?: unknown }>, backend?: unknown }> }} */ (
        JSON.parse(storeText || '{"format": 1, "streams": []}')
      );
    if (data.format !== 1 || !Array.isArray(data.streams)) {
      storeOk = false;
      soak.fail(phase, 'streams.json', `streams.json is not a store of format 1: ${storeText.slice(0, 200)}`);
    }
    for (const stream of data.streams ?? []) {
      const port = Number(stream.port);
      // Records hold a list of backends (objects with an address); one written before streams
      // had options holds a single `backend` string.
      const addresses = Array.isArray(stream.backends)
        ? stream.backends.map((backend) => String(backend?.address))
        : typeof stream.backend === 'string'
          ? [stream.backend]
          : [];
      if (stored.has(port)) {
        storeOk = false;
        soak.fail(phase, 'streams.json', `port ${port} appears twice in streams.json`);
      }
      stored.set(port, addresses.join(', ') || '(no backend)');
    }
  } catch (error) {
    storeOk = false;
    soak.fail(phase, 'streams.json', `streams.json is not JSON: ${/** @type {Error} */ (error).message}`);
  }
  return compare(soak, phase, 'streams.json', stored, expected) && storeOk;
}

/**
 * @param {Soak} soak
 * Nothing half-written, nothing unexpected: the home holds the store, the audit log, the lock,
 * stream.d/<n>/ with each master's stream file and nginx/<n>/ with each master's own files.
 * @param {Phase} phase
 * @param {number[]} streamIds the masters' folders under stream.d/
 * @param {number[]} nginxIds the masters' folders under nginx/
 * @returns {Promise<{ temporaries: number, strays: number }>}
 */
export async function checkHome(soak, phase, streamIds, nginxIds) {
  const { daemon } = soak;
  const streamRoot = join(daemon.home, 'stream.d');
  const nginxRoot = join(daemon.home, 'nginx');
  const temporaries = [];
  const strays = [];
  /** @type {Array<[string, string]>} folder, and what it may hold */
  const folders = [
    [daemon.home, 'home'],
    [streamRoot, 'numbered'],
    [nginxRoot, 'numbered'],
    ...streamIds.map((id) => /** @type {[string, string]} */ ([join(streamRoot, String(id)), 'stream.d/<n>'])),
    ...nginxIds.map((id) => /** @type {[string, string]} */ ([join(nginxRoot, String(id)), 'nginx/<n>'])),
  ];
  for (const [dir, kind] of folders) {
    for (const name of await readdir(dir).catch(() => /** @type {string[]} */ ([]))) {
      if (name.startsWith('.tmp-')) temporaries.push(join(dir, name));
      else if (kind === 'numbered' ? !/^[0-9]+$/.test(name) : !expectedInHome(kind, name)) strays.push(join(dir, name));
    }
  }
  if (temporaries.length > 0) soak.fail(phase, 'temporaries', `temporary files left behind: ${temporaries.join(', ')}`);
  if (streamIds.join() !== nginxIds.join())
    strays.push(`(stream.d/ has folders ${streamIds.join(', ')} but nginx/ has ${nginxIds.join(', ')})`);
  if (strays.length > 0)
    soak.fail(
      phase,
      'strays',
      `unexpected files in the home: ${strays.slice(0, 20).join(', ')}${strays.length > 20 ? ` ... (${strays.length})` : ''}`,
    );
  return { temporaries: temporaries.length, strays: strays.length };
}
