// @ts-check
/**
 * Benchmark 2: 1,000 creates from 32 concurrent clients through the legacy API, then 1,000
 * removes; every answer verified. Target: each phase under 1.5 s, no error, nothing left over.
 */
import { call, defaultMasters, echoBackend, firstByte, median, now, startDaemon } from './lib.mjs';

/**
 * The two phases against a managed daemon (with `env`), or against the daemon `start` gives.
 * @param {{ count?: number, clients?: number, env?: Record<string, string>, start?: (count: number) => Promise<{ url: string, base: number, stop(): Promise<void> }> }} [options]
 */
export async function phases(options = {}) {
  const count = options.count ?? 1000;
  const clients = options.clients ?? 32;
  const backend = await echoBackend();
  const daemon = options.start ? await options.start(count) : await startDaemon({ rangeSize: count, env: options.env });
  try {
    const ports = Array.from({ length: count }, (_, i) => daemon.base + i);
    /** @param {(port: number) => Promise<boolean>} work */
    const phase = async (work) => {
      let next = 0;
      let errors = 0;
      const started = now();
      await Promise.all(
        Array.from({ length: clients }, async () => {
          while (next < ports.length) {
            const port = /** @type {number} */ (ports[next++]);
            if (!(await work(port))) errors += 1;
          }
        }),
      );
      return { seconds: (now() - started) / 1000, errors };
    };
    const created = await phase(
      async (port) =>
        (await call('GET', `${daemon.url}/createstream/${port}/127.0.0.1:${backend.port}`)).json?.result === 'ok',
    );
    // Verified live: a sample forwards bytes, and the daemon lists them all.
    for (const port of ports.filter((_, i) => i % 50 === 0)) await firstByte(port);
    const listed = (await call('GET', `${daemon.url}/getstreams`)).json.length;
    const removed = await phase(
      async (port) => (await call('GET', `${daemon.url}/removestream/${port}`)).json?.result === 'ok',
    );
    const left = (await call('GET', `${daemon.url}/getstreams`)).json.length;
    return { created, removed, listed, left, count };
  } finally {
    await daemon.stop();
    await backend.close();
  }
}

/** The managed setups compared, the default first; every answer is checked against the kernel. */
const SETUPS = [
  { name: `default: ${defaultMasters()} masters, reloads only`, env: {} },
  {
    name: `${defaultMasters()} masters with handoffs (CONDUCTOR_NGINX_HANDOFF=true)`,
    env: { CONDUCTOR_NGINX_HANDOFF: 'true' },
  },
  { name: '1 master (CONDUCTOR_NGINX_INSTANCES=1)', env: { CONDUCTOR_NGINX_INSTANCES: '1' } },
  { name: '8 masters (CONDUCTOR_NGINX_INSTANCES=8)', env: { CONDUCTOR_NGINX_INSTANCES: '8' } },
];

export async function run() {
  const results = [];
  for (const setup of SETUPS) results.push(await phases({ env: setup.env }));
  const { startExternal } = await import('./external.mjs');
  const external = await phases({ start: startExternal });
  const managed = /** @type {Awaited<ReturnType<typeof phases>>} */ (results[0]);
  const holds =
    managed.created.seconds < 1.5 &&
    managed.removed.seconds < 1.5 &&
    managed.created.errors === 0 &&
    managed.removed.errors === 0 &&
    managed.left === 0 &&
    managed.listed === managed.count;
  const row = (/** @type {string} */ name, /** @type {typeof managed} */ result) => [
    name,
    `${result.created.seconds.toFixed(2)} s (${result.created.errors} errors, ${result.listed} listed)`,
    `${result.removed.seconds.toFixed(2)} s (${result.removed.errors} errors, ${result.left} left)`,
  ];
  return {
    title: '2. Burst: 1,000 creates then 1,000 removes, 32 clients, legacy API',
    target: 'each phase under 1.5 s, no error, nothing left over (managed mode, default settings)',
    holds,
    columns: ['mode', 'creates', 'removes'],
    rows: [
      ...SETUPS.map((setup, i) => row(setup.name, /** @type {typeof managed} */ (results[i]))),
      row('external (one nginx)', external),
    ],
    summary: 'the older service took about 11.5 s and 37 s, with failed and leftover removes',
    notes: await repeats(Number(process.env.BENCH_BURST_ROUNDS ?? 0)),
  };
}

/**
 * With BENCH_BURST_ROUNDS=n: n more rounds of the managed setups, interleaved, so that their
 * spread on a noisy machine can be told from their difference.
 * @param {number} rounds
 */
async function repeats(rounds) {
  if (!(rounds > 0)) return [];
  const modes = SETUPS;
  /** @type {Record<string, { created: number[], removed: number[], errors: number }>} */
  const seen = {};
  for (let round = 0; round < rounds; round += 1) {
    for (const mode of modes) {
      const result = await phases({ env: mode.env });
      seen[mode.name] ??= { created: [], removed: [], errors: 0 };
      const entry = seen[mode.name];
      entry.created.push(result.created.seconds);
      entry.removed.push(result.removed.seconds);
      entry.errors += result.created.errors + result.removed.errors + result.left + (result.count - result.listed);
    }
  }
  const list = (/** @type {number[]} */ values) => values.map((value) => value.toFixed(2)).join(', ');
  const mid = (/** @type {number[]} */ values) => median(values).toFixed(2);
  const table = [
    '| mode | creates (s) | median | removes (s) | median | errors and leftovers |',
    '| --- | --- | --- | --- | --- | --- |',
    ...Object.entries(seen).map(
      ([name, entry]) =>
        `| ${name} | ${list(entry.created)} | ${mid(entry.created)} | ${list(entry.removed)} | ${mid(entry.removed)} | ${entry.errors} |`,
    ),
  ];
  return [`${rounds} more rounds, interleaved:`, table.join('\n')];
}
