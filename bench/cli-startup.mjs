// @ts-check
/**
 * Benchmark 6: `conductor ls --json` against `node -e ""`, run alternately in the same run.
 * Target: at most 1.5 times.
 */
import { spawnSync } from 'node:child_process';
import { CLI, median, ms, now, startDaemon } from './lib.mjs';

export async function run(rounds = 40) {
  const daemon = await startDaemon({ rangeSize: 10 });
  const cli = [];
  const bare = [];
  try {
    const time = (/** @type {string[]} */ args) => {
      const started = now();
      const result = spawnSync(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      if (result.status !== 0) throw new Error(`${args.join(' ')}: ${result.stderr}`);
      return now() - started;
    };
    for (let i = 0; i < 3; i += 1) time([CLI, '--url', daemon.url, 'ls', '--json']); // warm the page cache
    for (let i = 0; i < rounds; i += 1) {
      bare.push(time(['-e', '']));
      cli.push(time([CLI, '--url', daemon.url, 'ls', '--json']));
    }
  } finally {
    await daemon.stop();
  }
  const ratio = median(cli) / median(bare);
  return {
    title: '6. CLI start-up',
    target: 'at most 1.5 times `node -e ""`',
    holds: ratio <= 1.5,
    columns: ['command', 'median'],
    rows: [
      ['node -e ""', ms(median(bare))],
      ['conductor ls --json (against a running daemon)', ms(median(cli))],
    ],
    summary: `ratio of medians ${ratio.toFixed(2)} (${rounds} runs each, alternating)`,
  };
}
