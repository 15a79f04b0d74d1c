// @ts-check
/**
 * The checks of a phase, run once its clients are idle, in order: the answers and reads
 * (read-checks.mjs), each view of the streams against the model (view-checks.mjs), traffic,
 * nginx's health and the daemon's resources (health-checks.mjs), and the logs.
 */
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { get } from './api.mjs';
import { checkStatus, checkTraffic, measure } from './health-checks.mjs';
import { perMasterFolders } from './host.mjs';
import { listeningPorts } from './net.mjs';
import { checkReads } from './read-checks.mjs';
import { FREE, UNKNOWN } from './state.mjs';
import { fmt, progress, rng } from './util.mjs';
import { checkHome, checkStore, checkStreamFiles, compare } from './view-checks.mjs';

/** @typedef {import('./state.mjs').Phase} Phase */
/** @typedef {import('./state.mjs').Soak} Soak */

export class PhaseChecker {
  /** @param {Soak} soak */
  constructor(soak) {
    this.soak = soak;
    /** Picks the ports whose traffic is checked: seeded, apart from the clients' mix. */
    this.random = rng(soak.options.seed ^ 0x5eed);
  }

  /**
   * Every check of a phase, once its clients are idle: the answers, the reads, each view of the
   * streams against the model, the home, traffic, nginx's health, the logs; then the resources.
   * @param {Phase} phase
   */
  async checkPhase(phase) {
    const { daemon } = this.soak;
    const checks = phase.checks;
    /** @param {string} name @param {boolean} ok */
    const note = (name, ok) => checks.push(`${ok ? 'ok' : 'FAILED'} ${name}`);
    const t0 = performance.now();

    note('daemon alive', daemon.alive);
    if (!daemon.alive)
      this.soak.fail(phase, 'daemon', `the daemon exited (code ${daemon.exitCode}, signal ${daemon.exitSignal})`);

    note('answers as predicted', phase.unexpected === 0);
    note('no 5xx', phase.fiveHundreds === 0);
    note('no transport errors', phase.transportErrors === 0);
    const readFailures = checkReads(this.soak, phase);
    note(`${phase.reads.length} reads consistent (${phase.readChecks} port states checked)`, readFailures === 0);

    const { listed, expected } = await this.listedAndExpected(phase);
    note('/getstreams == expected', compare(this.soak, phase, '/getstreams', listed, expected));

    const streamFolders = await perMasterFolders(join(daemon.home, 'stream.d'));
    const nginxFolders = await perMasterFolders(join(daemon.home, 'nginx'));
    note('stream.d/<n>/ files == expected', await checkStreamFiles(this.soak, phase, streamFolders.ids, expected));
    note('streams.json == expected', await checkStore(this.soak, phase, expected));

    const listening = await listeningPorts();
    /** @type {Map<number, string | undefined>} */
    const sockets = new Map();
    for (let port = daemon.start; port <= daemon.end; port += 1) if (listening.has(port)) sockets.set(port, undefined);
    note('LISTEN sockets == expected', compare(this.soak, phase, 'LISTEN sockets', sockets, expected));

    const { temporaries, strays } = await checkHome(this.soak, phase, streamFolders.ids, nginxFolders.ids);
    note('no .tmp- files', temporaries === 0);
    note('no stray files', strays === 0);

    const traffic = await checkTraffic(this.soak, phase, expected, this.random);
    note(`bytes flow on ${traffic.live} live ports, ${traffic.free} free ports refuse`, traffic.ok);

    const status = await checkStatus(this.soak, phase, streamFolders.ids.length);
    note(`${status.masters} nginx masters running, never restarted, no failed stream`, status.healthy);

    await this.soak.logs.read(phase);
    note('no error lines in the daemon log', phase.log.error === 0);
    if (phase.log.error > 0) this.soak.fail(phase, 'daemon log', `${phase.log.error} error lines in the daemon log`);

    await measure(this.soak, phase, expected.size, status.restarts);
    progress(
      `phase ${phase.n} checked in ${fmt((performance.now() - t0) / 1000)} s: ${phase.violations === 0 ? 'all checks passed' : `${phase.violations} violations`}`,
    );
  }

  /**
   * The daemon's final listing, and what the model expects (port -> backend address). Ports whose
   * state is unknown (a request without an answer) take the daemon's word for it; the failed
   * request is already a violation.
   * @param {Phase} phase
   */
  async listedAndExpected(phase) {
    const { daemon } = this.soak;
    const listing = daemon.alive ? await get(undefined, daemon.apiPort, '/getstreams', 30_000) : undefined;
    /** @type {Map<number, string | undefined>} */
    const listed = new Map();
    if (listing && Array.isArray(listing.json)) {
      for (const item of listing.json) {
        const entry = /** @type {{ listen: number, proxy_pass: string }} */ (item);
        listed.set(entry.listen, entry.proxy_pass);
      }
    } else {
      this.soak.fail(
        phase,
        'getstreams',
        `final /getstreams did not answer a list: ${listing?.error ?? listing?.text.slice(0, 200) ?? 'daemon down'}`,
      );
    }

    for (let offset = 0; offset < this.soak.size; offset += 1) {
      if (this.soak.model[offset] !== UNKNOWN) continue;
      const backend = listed.get(daemon.start + offset);
      this.soak.model[offset] = backend === undefined ? FREE : Math.max(0, this.soak.backendIndex(backend));
    }
    /** @type {Map<number, string>} */
    const expected = new Map();
    for (let offset = 0; offset < this.soak.size; offset += 1) {
      const state = this.soak.model[offset] ?? FREE;
      if (state >= 0) expected.set(daemon.start + offset, this.soak.backendAddress(state));
    }
    return { listed, expected };
  }
}
