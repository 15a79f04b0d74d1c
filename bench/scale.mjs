// @ts-check
/**
 * Benchmark 4: a 10,000-port range with 5,000 streams present. Create and remove latency against
 * `nginx -t` plus a reload of one nginx holding 5,000 streams, measured in the same run on a
 * scratch nginx (target: median at most 3 times that); `conductor ls --json` time; the daemon's
 * and nginx's memory (target: daemon RSS under 100 MB).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  CLI,
  call,
  defaultMasters,
  echoBackend,
  firstByte,
  freeBlock,
  median,
  ms,
  now,
  pidsOf,
  rssMiB,
  scratchNginx,
  sleep,
  startDaemon,
} from './lib.mjs';

export async function run(range = 10_000, present = 5_000, samples = 20) {
  const backend = await echoBackend();
  // nginx's own cost at that size: one nginx, 5,000 server blocks, nginx -t then a reload.
  const nginx = await scratchNginx(present + 4096);
  const base = await freeBlock(present);
  const floor = [];
  try {
    for (let i = 0; i < present; i += 1) {
      await writeFile(
        join(nginx.dir, 'stream.d', `s${base + i}.conf`),
        `server { listen 127.0.0.1:${base + i}; proxy_pass 127.0.0.1:${backend.port}; }\n`,
      );
    }
    nginx.reload();
    await sleep(3000);
    for (let i = 0; i < 5; i += 1) {
      const started = now();
      execFileSync('nginx', ['-t', '-q', '-c', join(nginx.dir, 'nginx.conf'), '-p', `${nginx.dir}/`, '-e', 'stderr']);
      const before = execFileSync('sh', ['-c', `cat /proc/${nginx.pid}/task/${nginx.pid}/children`], {
        encoding: 'utf8',
      });
      nginx.reload();
      for (;;) {
        const children = execFileSync('sh', ['-c', `cat /proc/${nginx.pid}/task/${nginx.pid}/children`], {
          encoding: 'utf8',
        })
          .trim()
          .split(' ');
        if (children.some((pid) => !before.includes(pid))) break;
        await sleep(2);
      }
      floor.push(now() - started);
      await sleep(300);
    }
  } finally {
    await nginx.stop();
  }

  const daemon = await startDaemon({ rangeSize: range });
  const creates = [];
  const removes = [];
  let lsTime = 0;
  let daemonRss = 0;
  let nginxRss = 0;
  let bulk = 0;
  try {
    // The 5,000 streams arrive in one declarative apply (one reload per master).
    const streams = Array.from({ length: present }, (_, i) => ({
      port: daemon.base + 2 * i,
      backend: `127.0.0.1:${backend.port}`,
    }));
    const started = now();
    const applied = await call('POST', `${daemon.url}/v1/apply`, { streams });
    bulk = now() - started;
    if (!applied.json?.applied) throw new Error(`apply: ${JSON.stringify(applied.json).slice(0, 300)}`);
    await firstByte(daemon.base);
    for (let i = 0; i < samples; i += 1) {
      const port = daemon.base + 2 * i + 1;
      let t = now();
      const created = await call('POST', `${daemon.url}/v1/streams`, { port, backend: `127.0.0.1:${backend.port}` });
      creates.push(now() - t);
      if (created.status !== 201) throw new Error(JSON.stringify(created.json));
      await sleep(150);
      t = now();
      await call('DELETE', `${daemon.url}/v1/streams/${port}`);
      removes.push(now() - t);
      await sleep(150);
    }
    const lsTimes = [];
    for (let i = 0; i < 5; i += 1) {
      const t = now();
      const result = spawnSync(process.execPath, [CLI, '--url', daemon.url, 'ls', '--json'], { maxBuffer: 64 << 20 });
      lsTimes.push(now() - t);
      if (result.status !== 0) throw new Error(String(result.stderr));
    }
    lsTime = median(lsTimes);
    await sleep(5000); // the daemon at rest with its 5,000 streams, not in the middle of a burst
    daemonRss = await rssMiB(/** @type {number} */ (daemon.child.pid));
    const nginxPids = await pidsOf(daemon.env.CONDUCTOR_HOME);
    for (const pid of nginxPids) nginxRss += await rssMiB(pid);
    // The reapers the masters run under (perl), counted with nginx.
    const reapers = new Set();
    for (const pid of nginxPids) {
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if ((await readFile(`/proc/${parent}/cmdline`, 'utf8').catch(() => '')).startsWith('conductor: nginx reaper'))
        reapers.add(parent);
    }
    for (const pid of reapers) nginxRss += await rssMiB(pid);
  } finally {
    await daemon.stop();
    await backend.close();
  }
  const reference = median(floor);
  const ratio = Math.max(median(creates), median(removes)) / reference;
  return {
    title: `4. Scale: a ${range.toLocaleString('en')}-port range with ${present.toLocaleString('en')} streams`,
    target:
      'create and remove median at most 3 times `nginx -t` + reload of one nginx at that size; daemon RSS under 100 MB',
    holds: ratio <= 3 && daemonRss < 100,
    columns: ['measure', 'value'],
    rows: [
      ['one nginx with 5,000 streams: nginx -t + reload (median of 5)', ms(reference)],
      ['create, median of 20', ms(median(creates))],
      ['remove, median of 20', ms(median(removes))],
      ['the 5,000 streams in one apply', ms(bulk)],
      ['conductor ls --json (5,000 streams), median of 5', ms(lsTime)],
      ['daemon RSS', `${daemonRss.toFixed(1)} MiB`],
      [
        `nginx RSS, ${defaultMasters()} masters, their workers and reapers (shared pages counted in each)`,
        `${nginxRss.toFixed(1)} MiB`,
      ],
    ],
    summary: `worst ratio ${ratio.toFixed(2)}`,
  };
}
