// @ts-check
/**
 * What the daemon and its nginx masters logged, read as the run goes: counts per phase (batches,
 * reloads, warn and error lines) and the lines worth a look in the report.
 */
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { perMasterFolders } from './host.mjs';

/** @typedef {import('./daemon.mjs').Daemon} Daemon */
/** @typedef {import('./state.mjs').Phase} Phase */

export class LogReader {
  /** @param {Daemon} daemon */
  constructor(daemon) {
    this.daemon = daemon;
    this.logOffset = 0;
    /** @type {Map<string, number>} bytes read so far of each master's error.log */
    this.nginxLogOffsets = new Map();
    /** @type {string[]} warn and error lines of the daemon log */
    this.logProblems = [];
    /** @type {string[]} lines of the masters' error.log files, each prefixed with its master */
    this.nginxProblems = [];
  }

  /**
   * Reads what the daemon and nginx logged since the last call.
   * @param {Phase | undefined} phase
   */
  async read(phase) {
    const text = await readSince(this.daemon.logPath, this.logOffset);
    this.logOffset += Buffer.byteLength(text.slice(0, text.lastIndexOf('\n') + 1));
    for (const line of text.slice(0, text.lastIndexOf('\n') + 1).split('\n')) {
      if (line === '') continue;
      // What node prints about the inspector (--inspect) is not the daemon's.
      if (/^(Debugger (listening|attached|ending)|For help, see: https:\/\/nodejs\.org\/)/.test(line)) continue;
      /** @type {Record<string, unknown>} */
      let record;
      try {
        record = JSON.parse(line);
      } catch {
        this.logProblems.push(line);
        if (phase) phase.log.error += 1;
        continue;
      }
      if (!phase) continue;
      if (record.msg === 'apply') {
        phase.log.applies += 1;
        phase.log.requests += Number(record.requests ?? 0);
        phase.log.applied += Number(record.applied ?? 0);
        phase.log.refused += Number(record.refused ?? 0);
        phase.log.attempts += Number(record.attempts ?? 0);
        // A batch whose requests were all refused before reaching nginx does not reload.
        if (Number(record.attempts ?? 0) > 0) phase.log.applyMs.push(Number(record.ms ?? 0));
      } else if (record.msg === 'request') phase.log.requestLines += 1;
      if (record.level === 'warn' || record.level === 'error') {
        if (record.level === 'warn') phase.log.warn += 1;
        else phase.log.error += 1;
        if (this.logProblems.length < 100) this.logProblems.push(line);
      }
    }
    // Each master writes its own nginx/<n>/error.log.
    const nginxRoot = join(this.daemon.home, 'nginx');
    for (const id of (await perMasterFolders(nginxRoot)).ids) {
      const nginxLog = join(nginxRoot, String(id), 'error.log');
      const nginxText = await readSince(nginxLog, this.nginxLogOffsets.get(nginxLog) ?? 0);
      this.nginxLogOffsets.set(nginxLog, (this.nginxLogOffsets.get(nginxLog) ?? 0) + Buffer.byteLength(nginxText));
      for (const line of nginxText.split('\n')) {
        if (line === '') continue;
        if (phase) phase.nginxErrorLogLines += 1;
        if (this.nginxProblems.length < 50) this.nginxProblems.push(`${id}: ${line}`);
      }
    }
  }
}

/**
 * @param {string} path
 * @param {number} offset
 */
async function readSince(path, offset) {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch {
    return '';
  }
  try {
    const { size } = await handle.stat();
    if (size <= offset) return '';
    const buffer = Buffer.alloc(size - offset);
    await handle.read(buffer, 0, buffer.length, offset);
    return buffer.toString('utf8');
  } finally {
    await handle.close();
  }
}
