// @ts-check
/**
 * stream-conductor soak test: one real daemon (managed mode, its own nginx masters), a full port
 * range, and many concurrent clients hammering the legacy API for several phases. After every
 * phase, with all clients idle, every view of the state must agree with what the acknowledged
 * answers imply, bytes must flow through live ports, no answer may be a 5xx, and the daemon's
 * memory and open file descriptors must stay flat from phase 2 on.
 *
 * Not part of `npm test`: run `npm run build`, then `npm run soak -- --help`.
 *
 * This file is the run itself (start, phases, growth check, stop, report); the rest lives beside
 * it: options.mjs (flags), load.mjs (the clients), checks.mjs (what is checked after each phase),
 * state.mjs (the model and the violations), logs.mjs, report.mjs, and the helpers daemon.mjs,
 * api.mjs, net.mjs, host.mjs, inspector.mjs, util.mjs.
 *
 * Why clients mutate disjoint slices of ports: each of the daemon's nginx masters applies the
 * requests that reach it during a reload together in one batch and answers them all when the
 * batch is done, so two acknowledged
 * mutations of the same port from two clients can complete in either order on the wire; their
 * completion times say nothing about the order the daemon applied them in. Each client therefore
 * owns the ports p with (p - start) % clients == its index, issues one request at a time, and is
 * the only one to mutate them, which makes the expected state of every port exact, and the answer
 * to every create and remove predictable. Same-port races are still exercised, deterministically:
 * a "race" operation sends 4 identical creates (or removes) of one owned port at once, of which
 * exactly one must win. Reads (getstreams, getfreeport, hasstream) are global, and are checked
 * against every port whose state could not change while the read was in flight.
 */
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { get } from './api.mjs';
import { PhaseChecker } from './checks.mjs';
import { startDaemon, stopDaemon } from './daemon.mjs';
import { fdCount, nginxProcesses, rssKiB } from './host.mjs';
import { daemonMemory } from './inspector.mjs';
import { Load } from './load.mjs';
import { EchoBackend, freePortBlock } from './net.mjs';
import { readOptions, USAGE } from './options.mjs';
import { relatedLogLines, report } from './report.mjs';
import { Soak } from './state.mjs';
import { fmt, progress } from './util.mjs';

/** @typedef {import('./daemon.mjs').Daemon} Daemon */
/** @typedef {import('./options.mjs').Options} Options */
/** @typedef {import('./state.mjs').PhaseMetrics} PhaseMetrics */
/** @typedef {import('./state.mjs').StatusReport} StatusReport */

/** nginx's version line, as the report shows it. */
function nginxVersionText() {
  return new Promise((done) => {
    const child = spawn('/usr/sbin/nginx', ['-v'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let text = '';
    child.stderr.on('data', (chunk) => (text += chunk.toString('utf8')));
    child.on('error', () => done('nginx (version unknown)'));
    child.on('close', () => done(text.trim().replace(/^nginx version: /, '') || 'nginx (version unknown)'));
  });
}

/**
 * What the daemon and its nginx use before the first phase.
 * @param {Daemon} daemon
 * @param {string} home
 * @returns {Promise<PhaseMetrics>}
 */
async function baselineMetrics(daemon, home) {
  const nginx = await nginxProcesses(home);
  let nginxRss = 0;
  for (const pid of [...nginx.masters, ...nginx.workers]) nginxRss += await rssKiB(pid);
  const memory = await daemonMemory(daemon);
  return {
    daemonRssKiB: memory.rssKiB,
    heapUsedKiB: memory.heapUsedKiB,
    peakRssKiB: NaN,
    daemonFds: await fdCount(daemon.pid),
    nginxProcesses: nginx.masters.length + nginx.workers.length,
    nginxRssKiB: nginxRss,
    live: 0,
    nginxRestarts: 0,
  };
}

/**
 * Memory and descriptors must stay flat from phase 2 on (phase 1 fills the range from empty):
 * fails the run when they grew past the tolerances; answers the report's lines about it.
 * @param {Soak} soak
 * @param {Options} options
 */
function judgeGrowth(soak, options) {
  /** @type {string[]} */
  const lines = [];
  const second = soak.phases[1]?.metrics;
  const last = soak.phases[soak.phases.length - 1]?.metrics;
  if (second && last && soak.phases.length >= 2) {
    const rssGrowth = ((last.daemonRssKiB - second.daemonRssKiB) / second.daemonRssKiB) * 100;
    const fdGrowth = last.daemonFds - second.daemonFds;
    lines.push(
      `daemon RSS${options.rawRss ? ' (raw, no GC forced)' : ' after a full GC'} phase 2 -> phase ${soak.phases.length}: ${fmt(second.daemonRssKiB / 1024)} -> ${fmt(last.daemonRssKiB / 1024)} MiB (${rssGrowth >= 0 ? '+' : ''}${fmt(rssGrowth)}%, tolerance ${options.rssTolerancePct}%)`,
    );
    lines.push(
      `daemon fds phase 2 -> phase ${soak.phases.length}: ${second.daemonFds} -> ${last.daemonFds} (${fdGrowth >= 0 ? '+' : ''}${fdGrowth}, tolerance ${options.fdTolerance})`,
    );
    if (!options.rawRss)
      lines.push(
        `daemon JS heap used after GC phase 2 -> phase ${soak.phases.length}: ${fmt(second.heapUsedKiB / 1024)} -> ${fmt(last.heapUsedKiB / 1024)} MiB (recorded, not judged)`,
      );
    lines.push(
      `nginx RSS phase 2 -> phase ${soak.phases.length}: ${fmt(second.nginxRssKiB / 1024)} -> ${fmt(last.nginxRssKiB / 1024)} MiB (recorded, not judged: it follows the number of live ports)`,
    );
    if (soak.phases.length < 3) lines.push('only 2 phases: the growth check compares phase 2 with itself');
    if (!(rssGrowth <= options.rssTolerancePct))
      soak.fail(
        undefined,
        'growth',
        `daemon RSS grew ${fmt(rssGrowth)}% from phase 2 to phase ${soak.phases.length} (tolerance ${options.rssTolerancePct}%)`,
      );
    if (!(fdGrowth <= options.fdTolerance))
      soak.fail(
        undefined,
        'growth',
        `daemon fds grew by ${fdGrowth} from phase 2 to phase ${soak.phases.length} (tolerance ${options.fdTolerance})`,
      );
  } else {
    lines.push('fewer than 2 phases ran: no growth check');
  }
  return lines;
}

async function main() {
  /** @type {Options} */
  let options;
  try {
    options = readOptions();
  } catch (error) {
    process.stderr.write(`soak: ${/** @type {Error} */ (error).message}\n\n${USAGE}\n`);
    return 2;
  }
  const startedAt = new Date();
  const home = await mkdtemp(join(tmpdir(), 'sc-soak-'));
  /** @type {EchoBackend[]} */
  const backends = [];
  /** @type {Daemon | undefined} */
  let daemon;
  /** @type {Soak | undefined} */
  let soak;
  /** @type {{ clean: boolean, notes: string[] } | undefined} */
  let stop;
  /** @type {string | undefined} */
  let fatal;
  let failed = false;
  let kept = false;
  /** @type {PhaseMetrics | undefined} */
  let baseline;
  /** @type {string[]} */
  const growth = [];
  let startupMs = 0;
  let nginxVersion = 'nginx';
  let nginxLayout = 'unknown';

  const onSignal = (/** @type {string} */ signal) => {
    progress(`${signal}: stopping after the current requests (send it again to stop at once)`);
    if (soak) soak.aborted = true;
    process.once(signal, () => {
      daemon?.child.kill('SIGTERM');
      rmSync(home, { recursive: true, force: true });
      process.exit(130);
    });
  };
  process.once('SIGINT', () => onSignal('SIGINT'));
  process.once('SIGTERM', () => onSignal('SIGTERM'));
  // Last resort if something throws past the finally below.
  process.once('exit', () => {
    if (daemon?.alive) daemon.child.kill('SIGTERM');
  });

  try {
    nginxVersion = await nginxVersionText();
    backends.push(await EchoBackend.start('a'), await EchoBackend.start('b'));
    const start = await freePortBlock(options.ports + 2, options.base);
    progress(
      `home ${home}, range ${start}-${start + options.ports - 1}, API 127.0.0.1:${start + options.ports}, seed ${options.seed}`,
    );
    const t0 = performance.now();
    daemon = await startDaemon(home, start, options.ports, !options.rawRss);
    startupMs = performance.now() - t0;
    soak = new Soak(options, daemon, backends);
    const load = new Load(soak);
    const checker = new PhaseChecker(soak);
    const initial = /** @type {StatusReport | undefined} */ (
      (await get(undefined, daemon.apiPort, '/v1/status', 30_000)).json
    );
    const masters = initial?.nginxInstances ?? [];
    const workers = masters.map((master) => master.workers ?? NaN);
    nginxLayout = `${masters.length} masters (stream.d/<n>/ and nginx/<n>/ for n = 0..${masters.length - 1}), ${Math.min(...workers)}${Math.max(...workers) === Math.min(...workers) ? '' : `-${Math.max(...workers)}`} worker(s) each`;
    await soak.logs.read(undefined);
    baseline = await baselineMetrics(daemon, home);

    for (let n = 1; n <= options.phases && soak.running(); n += 1) {
      progress(`phase ${n}/${options.phases}: ${options.ops} requests from ${options.clients} clients`);
      const phase = await load.runPhase(n);
      progress(`phase ${n}: ${phase.done} requests in ${fmt((phase.ended - phase.started) / 1000)} s`);
      await checker.checkPhase(phase);
    }
    if (soak.deadlineHit)
      soak.fail(
        undefined,
        'deadline',
        `the global deadline (${options.deadlineMin} min) was reached before the ${options.phases} phases were done`,
      );
    if (soak.aborted) soak.fail(undefined, 'interrupted', 'the run was interrupted by a signal');

    growth.push(...judgeGrowth(soak, options));
  } catch (error) {
    fatal = error instanceof Error ? (error.stack ?? error.message) : String(error);
    progress(`error: ${fatal}`);
  } finally {
    if (daemon) {
      progress('stopping the daemon (SIGTERM)');
      stop = await stopDaemon(daemon);
      if (soak) {
        await soak.logs.read(soak.phases[soak.phases.length - 1]);
        if (!stop.clean) soak.fail(undefined, 'shutdown', stop.notes.join('; '));
      }
    }
    for (const backend of backends) await backend.close();
    failed = fatal !== undefined || !soak || soak.violationCount > 0;
    if (soak && failed) soak.relatedLog = await relatedLogLines(soak);
    kept = failed && options.keepHome;
    if (!kept) await rm(home, { recursive: true, force: true });
  }
  if (soak) {
    process.stdout.write(
      `${report(soak, { options, startedAt, startupMs, baseline, stop, growth, failed, nginxVersion, nginxLayout, fatal, home, kept })}\n`,
    );
  } else {
    process.stderr.write(`soak: could not run: ${fatal}\n`);
    return 2;
  }
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(`soak: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(2);
  },
);
