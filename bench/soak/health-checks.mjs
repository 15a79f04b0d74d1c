// @ts-check
/**
 * Whether the streams and nginx are healthy once a phase is idle: bytes through a sample of
 * ports, every master running and never restarted, and the daemon's memory and descriptors.
 */
import { get } from './api.mjs';
import { fdCount, nginxProcesses, rssKiB } from './host.mjs';
import { daemonMemory } from './inspector.mjs';
import { connectOutcome, roundTrip } from './net.mjs';
import { sleep } from './util.mjs';

/** @typedef {import('./net.mjs').EchoBackend} EchoBackend */
/** @typedef {import('./state.mjs').Phase} Phase */
/** @typedef {import('./state.mjs').Soak} Soak */
/** @typedef {import('./state.mjs').StatusReport} StatusReport */

/**
 * @param {Soak} soak
 * Bytes through a sample of live ports, and a sample of free ports refusing.
 * @param {Phase} phase
 * @param {Map<number, string>} expected
 * @param {() => number} random picks the sampled ports
 */
export async function checkTraffic(soak, phase, expected, random) {
  const { daemon } = soak;
  const live = [...expected.keys()];
  const free = [];
  for (let port = daemon.start; port <= daemon.end; port += 1) if (!expected.has(port)) free.push(port);
  const shuffle = (/** @type {number[]} */ list) => {
    for (let i = list.length - 1; i > 0; i -= 1) {
      const j = Math.floor(random() * (i + 1));
      [list[i], list[j]] = [/** @type {number} */ (list[j]), /** @type {number} */ (list[i])];
    }
    return list;
  };
  const sampleLive = shuffle(live).slice(0, soak.options.sample);
  const sampleFree = shuffle(free).slice(0, Math.min(20, soak.options.sample));
  let trafficOk = true;
  for (let i = 0; i < sampleLive.length; i += 10) {
    await Promise.all(
      sampleLive.slice(i, i + 10).map(async (port) => {
        const name = /** @type {EchoBackend} */ (
          soak.backends[soak.backendIndex(/** @type {string} */ (expected.get(port)))]
        ).name;
        const payload = `soak-${phase.n}-${port}`;
        try {
          const answer = await roundTrip(port, payload, name.length + 1 + payload.length);
          if (answer !== `${name}:${payload}`)
            throw new Error(`answered ${JSON.stringify(answer)}, expected ${JSON.stringify(`${name}:${payload}`)}`);
        } catch (error) {
          trafficOk = false;
          soak.fail(
            phase,
            'traffic',
            `port ${port} (live, to ${expected.get(port)}): ${/** @type {Error} */ (error).message}`,
            { port },
          );
        }
      }),
    );
  }
  for (const port of sampleFree) {
    const outcome = await connectOutcome(port);
    if (outcome !== 'refused') {
      trafficOk = false;
      soak.fail(phase, 'traffic', `port ${port} has no stream but a connection to it was ${outcome}`, { port });
    }
  }
  return { ok: trafficOk, live: sampleLive.length, free: sampleFree.length };
}

/**
 * @param {Soak} soak
 * Every master runs (one per folder), none was ever restarted, nothing is set aside.
 * @param {Phase} phase
 * @param {number} folders the masters' folders under stream.d/
 */
export async function checkStatus(soak, phase, folders) {
  const { daemon } = soak;
  const status = daemon.alive ? await get(undefined, daemon.apiPort, '/v1/status', 30_000) : undefined;
  const st = /** @type {StatusReport | undefined} */ (status?.json);
  const restarts = st?.nginx?.restarts ?? NaN;
  const instances = st?.nginxInstances ?? [];
  const down = instances
    .filter((instance) => instance.state !== 'running' || instance.restarts !== 0)
    .map((instance) => instance.id);
  const running = await nginxProcesses(daemon.home);
  const healthy =
    st?.nginx?.state === 'running' &&
    restarts === 0 &&
    (st?.streams?.failed ?? 0) === 0 &&
    instances.length > 0 &&
    down.length === 0 &&
    running.masters.length === instances.length &&
    folders === instances.length;
  if (!healthy) {
    soak.fail(
      phase,
      'status',
      `/v1/status: nginx ${st?.nginx?.state}, ${restarts} restarts, ${st?.streams?.failed} failed streams, ${instances.length} masters (not running or restarted: ${down.join(', ') || 'none'}); ${running.masters.length} master processes of this home, ${folders} stream.d folders`,
    );
  }
  return { healthy, restarts, masters: instances.length };
}

/**
 * @param {Soak} soak
 * Resources, once the clients' connections are closed: memory after a full GC, then the fd
 * count once it settles (the inspector connection is closed by then).
 * @param {Phase} phase
 * @param {number} live
 * @param {number} restarts
 */
export async function measure(soak, phase, live, restarts) {
  const { daemon } = soak;
  /** @type {{ rssKiB: number, heapUsedKiB: number }} */
  let memory = { rssKiB: NaN, heapUsedKiB: NaN };
  try {
    memory = await daemonMemory(daemon);
  } catch (error) {
    soak.fail(phase, 'memory', `could not measure the daemon's memory: ${/** @type {Error} */ (error).message}`);
  }
  let fds = await fdCount(daemon.pid);
  for (let waited = 0; waited < 3000; waited += 200) {
    await sleep(200);
    const again = await fdCount(daemon.pid);
    if (again === fds) break;
    fds = again;
  }
  const nginx = await nginxProcesses(daemon.home);
  let nginxRss = 0;
  for (const pid of [...nginx.masters, ...nginx.workers]) nginxRss += await rssKiB(pid);
  phase.metrics = {
    daemonRssKiB: memory.rssKiB,
    heapUsedKiB: memory.heapUsedKiB,
    peakRssKiB: phase.peakRssKiB,
    daemonFds: fds,
    nginxProcesses: nginx.masters.length + nginx.workers.length,
    nginxRssKiB: nginxRss,
    live,
    nginxRestarts: restarts,
  };
}
