// @ts-check
/**
 * Benchmark 1: one create on an idle daemon, from the API call to its answer (the stream verified
 * live), against nginx's own floor measured in the same run on a scratch nginx: write one server
 * block, reload, first byte proxied. Target: median at most 2.5 times the floor.
 */
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  call,
  echoBackend,
  firstByte,
  freeBlock,
  median,
  ms,
  now,
  percentile,
  scratchNginx,
  sleep,
  startDaemon,
} from './lib.mjs';

/** @param {{ rounds?: number, mode?: 'managed' | 'external' }} [options] */
export async function run(options = {}) {
  const rounds = options.rounds ?? 40;
  const backend = await echoBackend();
  const floor = [];
  const nginx = await scratchNginx();
  const scratchBase = await freeBlock(rounds);
  try {
    for (let i = 0; i < rounds; i += 1) {
      const port = scratchBase + i;
      const file = join(nginx.dir, 'stream.d', `s${port}.conf`);
      const started = now();
      await writeFile(file, `server { listen 127.0.0.1:${port}; proxy_pass 127.0.0.1:${backend.port}; }\n`);
      nginx.reload();
      for (;;) {
        try {
          await firstByte(port);
          break;
        } catch {
          await sleep(1);
        }
      }
      floor.push(now() - started);
      await rm(file);
      nginx.reload();
      await sleep(250);
    }
  } finally {
    await nginx.stop();
  }

  const daemon = await startDaemon({ rangeSize: rounds });
  const creates = [];
  try {
    for (let i = 0; i < rounds; i += 1) {
      const port = daemon.base + i;
      const started = now();
      const answer = await call('POST', `${daemon.url}/v1/streams`, { port, backend: `127.0.0.1:${backend.port}` });
      creates.push(now() - started);
      if (answer.status !== 201) throw new Error(`create ${port}: ${JSON.stringify(answer.json)}`);
      await firstByte(port); // live when answered: this must not fail
      await call('DELETE', `${daemon.url}/v1/streams/${port}`);
      await sleep(250);
    }
  } finally {
    await daemon.stop();
    await backend.close();
  }
  const ratio = median(creates) / median(floor);
  return {
    title: '1. One create, idle',
    target: 'median at most 2.5 times the floor',
    holds: ratio <= 2.5,
    rows: [
      ['nginx floor (write, reload, first byte)', ms(median(floor)), ms(percentile(floor, 90))],
      ['create through the API, answered live', ms(median(creates)), ms(percentile(creates, 90))],
    ],
    columns: ['', 'median', 'p90'],
    summary: `ratio of medians ${ratio.toFixed(2)} (${rounds} rounds each, 250 ms apart)`,
  };
}
