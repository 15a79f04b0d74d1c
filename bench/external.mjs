// @ts-check
/**
 * External mode for the benchmarks: the container's entrypoint (docker/entrypoint.sh) run on the
 * host, so one nginx that the daemon does not own, tested with nginx -t before each reload.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { call, freeBlock, ROOT, sleep } from './lib.mjs';

/** @param {number} rangeSize */
export async function startExternal(rangeSize) {
  const dir = await mkdtemp(join(tmpdir(), 'sc-bench-ext-'));
  const base = await freeBlock(rangeSize + 1);
  const child = spawn('bash', [join(ROOT, 'docker/entrypoint.sh')], {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      STREAM_CONFIG_PATH: join(dir, 'stream.d'),
      CONDUCTOR_HOME: join(dir, 'home'),
      CONDUCTOR_RUN_DIR: join(dir, 'run'),
      PORT_RANGE: `${base}-${base + rangeSize - 1}`,
      BIND_ADDRESS: '127.0.0.1',
      BIND_PORT: String(base + rangeSize),
      CONDUCTOR_LISTEN_ADDRESS: '127.0.0.1',
      CONDUCTOR_LOG_LEVEL: 'warn',
    },
    stdio: 'ignore',
  });
  const url = `http://127.0.0.1:${base + rangeSize}`;
  for (let i = 0; ; i += 1) {
    try {
      if ((await call('GET', `${url}/status`)).status === 200) break;
    } catch {
      // not yet
    }
    if (i > 600 || child.exitCode !== null) throw new Error('external daemon did not start');
    await sleep(50);
  }
  return {
    url,
    base,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((done) => child.once('exit', done));
      await rm(dir, { recursive: true, force: true });
    },
  };
}
