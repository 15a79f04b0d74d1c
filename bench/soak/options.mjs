// @ts-check
/** The soak's command line: its flags, their defaults and limits, and the usage text. */
import { parseArgs } from 'node:util';

export const USAGE = `usage: node bench/soak/soak.mjs [options]   (or: npm run soak -- [options])

  --phases N            phases (default 5)
  --ops N               HTTP requests per phase (default 6000)
  --ports N             size of PORT_RANGE (default 1000; the range is a free block below 32768)
  --clients N           concurrent clients (default 64)
  --deadline MIN        global deadline in minutes (default 15); reaching it fails the run
  --sample N            live ports whose bytes are checked after each phase (default 50)
  --seed N              seed of the operation mix (default: random, printed in the report)
  --base PORT           first port of the range (default: a free block found at random)
  --request-timeout S   per-request timeout in seconds (default 60)
  --rss-tolerance PCT   allowed daemon RSS growth from phase 2 to the last phase (default 20)
  --fd-tolerance N      allowed daemon fd growth from phase 2 to the last phase (default 10)
  --raw-rss             measure the daemon's RSS as it is, without forcing a full GC first
                        (by default the daemon runs with --inspect on a loopback port of the
                        checked block, and the soak asks V8 for a full GC before each measurement)
  --keep-home           keep the temporary home (daemon.log, stream files) when the run fails
  --help                this text

The Markdown report goes to stdout, progress to stderr. Exit status: 0 all checks passed,
1 a check failed (invariant, 5xx, growth, deadline), 2 the soak could not run.`;

/** @typedef {{ phases: number, ops: number, ports: number, clients: number, deadlineMin: number, sample: number, seed: number, base: number | undefined, requestTimeoutMs: number, rssTolerancePct: number, fdTolerance: number, keepHome: boolean, rawRss: boolean }} Options */

/** @returns {Options} */
export function readOptions() {
  const { values } = parseArgs({
    options: {
      phases: { type: 'string' },
      ops: { type: 'string' },
      ports: { type: 'string' },
      clients: { type: 'string' },
      deadline: { type: 'string' },
      sample: { type: 'string' },
      seed: { type: 'string' },
      base: { type: 'string' },
      'request-timeout': { type: 'string' },
      'rss-tolerance': { type: 'string' },
      'fd-tolerance': { type: 'string' },
      'keep-home': { type: 'boolean' },
      'raw-rss': { type: 'boolean' },
      help: { type: 'boolean' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  /**
   * @param {string} name
   * @param {string | undefined} text
   * @param {number} fallback
   * @param {number} min
   * @param {number} max
   */
  const num = (name, text, fallback, min, max) => {
    if (text === undefined) return fallback;
    const value = Number(text);
    if (!/^[0-9]+(\.[0-9]+)?$/.test(text) || value < min || value > max)
      throw new UsageError(`--${name} must be a number from ${min} to ${max}, got ${JSON.stringify(text)}`);
    return value;
  };
  const ports = Math.floor(num('ports', values.ports, 1000, 1, 22000));
  const base = values.base === undefined ? undefined : Math.floor(num('base', values.base, 0, 1024, 32767));
  if (base !== undefined && base + ports + 1 > 32767)
    throw new UsageError(
      `--base ${base} with --ports ${ports} reaches ${base + ports + 1} (the API and inspector ports follow the range): everything must stay below 32768`,
    );
  return {
    phases: Math.floor(num('phases', values.phases, 5, 1, 1000)),
    ops: Math.floor(num('ops', values.ops, 6000, 1, 10_000_000)),
    ports,
    clients: Math.floor(num('clients', values.clients, 64, 1, 1024)),
    deadlineMin: num('deadline', values.deadline, 15, 0.1, 24 * 60),
    sample: Math.floor(num('sample', values.sample, 50, 0, 100_000)),
    seed: Math.floor(num('seed', values.seed, Math.floor(Math.random() * 2 ** 31), 0, 2 ** 32 - 1)),
    base,
    requestTimeoutMs: num('request-timeout', values['request-timeout'], 60, 1, 3600) * 1000,
    rssTolerancePct: num('rss-tolerance', values['rss-tolerance'], 20, 0, 10_000),
    fdTolerance: Math.floor(num('fd-tolerance', values['fd-tolerance'], 10, 0, 100_000)),
    keepHome: values['keep-home'] === true,
    rawRss: values['raw-rss'] === true,
  };
}

export class UsageError extends Error {}
