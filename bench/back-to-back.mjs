// @ts-check
/**
 * Benchmark 3: 200 creates one after another from one client, each answered live. One nginx
 * master allows about 10 reloads a second. Target: median under 30 ms a create in managed mode;
 * external mode (one nginx) reported beside it.
 */
import { startExternal } from './external.mjs';
import { call, defaultMasters, echoBackend, median, ms, now, percentile, startDaemon } from './lib.mjs';

/** @param {{ url: string, base: number }} daemon @param {number} count @param {number} backendPort */
async function sequence(daemon, count, backendPort) {
  const times = [];
  for (let i = 0; i < count; i += 1) {
    const started = now();
    const answer = await call('POST', `${daemon.url}/v1/streams`, {
      port: daemon.base + i,
      backend: `127.0.0.1:${backendPort}`,
    });
    times.push(now() - started);
    if (answer.status !== 201) throw new Error(`create ${daemon.base + i}: ${JSON.stringify(answer.json)}`);
  }
  return times;
}

export async function run(count = 200) {
  const backend = await echoBackend();
  const managed = await startDaemon({ rangeSize: count });
  let managedTimes;
  try {
    managedTimes = await sequence(managed, count, backend.port);
  } finally {
    await managed.stop();
  }
  const external = await startExternal(count);
  let externalTimes;
  try {
    externalTimes = await sequence(external, count, backend.port);
  } finally {
    await external.stop();
    await backend.close();
  }
  const total = (/** @type {number[]} */ times) => `${(times.reduce((a, b) => a + b, 0) / 1000).toFixed(2)} s`;
  return {
    title: `3. Back to back: ${count} creates one after another, one client`,
    target: 'median under 30 ms a create in managed mode',
    holds: median(managedTimes) < 30,
    columns: ['mode', 'median', 'p90', 'p99', 'total'],
    rows: [
      [
        `managed (${defaultMasters()} masters)`,
        ms(median(managedTimes)),
        ms(percentile(managedTimes, 90)),
        ms(percentile(managedTimes, 99)),
        total(managedTimes),
      ],
      [
        'external (one nginx, nginx -t first)',
        ms(median(externalTimes)),
        ms(percentile(externalTimes, 90)),
        ms(percentile(externalTimes, 99)),
        total(externalTimes),
      ],
    ],
    summary: 'each create answered once live',
  };
}
