// @ts-check
/**
 * Runs benchmarks and prints their results as Markdown: `npm run bench` for all of them,
 * `npm run bench -- create-latency burst` for some. Build first (`npm run build`).
 */
import { machine } from './lib.mjs';

const all = ['create-latency', 'burst', 'back-to-back', 'scale', 'dataplane', 'cli-startup', 'fleet'];
// Run only when named: `npm run bench -- promises` (a stress check of the change API's promises, not a timing).
const optional = ['promises'];
const chosen = process.argv.slice(2).filter((arg) => !arg.startsWith('-'));
const names = chosen.length > 0 ? chosen : all;
for (const name of names)
  if (!all.includes(name) && !optional.includes(name))
    throw new Error(`no benchmark ${name}: ${[...all, ...optional].join(', ')}`);

const info = machine();
process.stdout.write(
  `Run ${new Date().toISOString()} on ${info.cpus}, ${info.memory}; Node ${info.node}; ${info.nginx}; kernel ${info.kernel}.\n\n`,
);
let failed = 0;
for (const name of names) {
  /** @type {{ run: () => Promise<{ title: string, target: string, holds: boolean, rows: string[][], columns: string[], summary: string, notes?: string[] }> }} */
  const bench = await import(`./${name}.mjs`);
  const result = await bench.run();
  const lines = [
    `### ${result.title}`,
    '',
    `| ${result.columns.join(' | ')} |`,
    `| ${result.columns.map(() => '---').join(' | ')} |`,
  ];
  for (const row of result.rows) lines.push(`| ${row.join(' | ')} |`);
  lines.push('', `${result.summary}. Target: ${result.target}: **${result.holds ? 'holds' : 'does not hold'}**.`);
  for (const note of result.notes ?? []) lines.push('', note);
  process.stdout.write(`${lines.join('\n')}\n\n`);
  if (!result.holds) failed += 1;
}
process.exitCode = failed > 0 ? 1 : 0;
