/**
 * Two builds of the daemon, same machine, same hour: rounds of create-latency, back-to-back
 * (200 creates) and one default burst (1,000 creates, 1,000 removes) from each checkout, in turn
 * (A B A B ...), each in its own node process with that checkout's own benchmark code, and the
 * ratio A/B pair by pair. For a redesign that must not cost speed.
 *
 *   node bench/compare-builds.mjs /path/to/built/checkout-A /path/to/built/checkout-B [rounds=4]
 *
 * Both checkouts must be built (`pnpm run build`); A is usually this one.
 */
import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';

const [a, b, roundsText = '4'] = process.argv.slice(2);
if (!a || !b) {
  process.stderr.write('usage: node bench/compare-builds.mjs CHECKOUT_A CHECKOUT_B [ROUNDS]\n');
  process.exit(2);
}
const rounds = Number(roundsText);

// One round in a fresh process, importing the checkout's own benchmarks.
const round = `
const root = process.argv[1];
const latency = await (await import(root + '/bench/create-latency.mjs')).run();
const b2b = await (await import(root + '/bench/back-to-back.mjs')).run(200);
const burst = await (await import(root + '/bench/burst.mjs')).phases({});
const ms = (text) => Number.parseFloat(text);
console.log(JSON.stringify({
  floor: ms(latency.rows[0][1]), create: ms(latency.rows[1][1]),
  managed: ms(b2b.rows[0][1]), external: ms(b2b.rows[1][1]),
  creates: burst.created.seconds, removes: burst.removed.seconds,
}));
process.exit(0);`;

const run = (root) => {
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', round, resolve(root)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
    maxBuffer: 1 << 24,
  });
  return JSON.parse(out.trim().split('\n').at(-1));
};

const keys = ['floor', 'create', 'managed', 'external', 'creates', 'removes'];
const pairs = [];
for (let i = 0; i < rounds; i += 1) pairs.push({ a: run(a), b: run(b) });
const median = (values) => {
  const sorted = [...values].sort((x, y) => x - y);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};
const fmt = (value) => (value < 10 ? value.toFixed(2) : value.toFixed(1));
const lines = [
  `A = ${resolve(a)}, B = ${resolve(b)}, ${rounds} rounds, A then B in each`,
  '',
  '| figure | A (each round) | B (each round) | A/B pair by pair | median A/B |',
  '| --- | --- | --- | --- | --- |',
];
for (const key of keys) {
  const ratios = pairs.map(({ a: x, b: y }) => x[key] / y[key]);
  lines.push(
    `| ${key} | ${pairs.map((p) => fmt(p.a[key])).join(', ')} | ${pairs.map((p) => fmt(p.b[key])).join(', ')} | ${ratios.map((r) => r.toFixed(2)).join(', ')} | ${median(ratios).toFixed(2)} |`,
  );
}
process.stdout.write(`${lines.join('\n')}\n`);
