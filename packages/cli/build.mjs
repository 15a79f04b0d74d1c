// Bundles the CLI into one CommonJS file (dist/conductor.cjs): the command starts for every call,
// and one CommonJS file starts markedly faster than a tree of ES modules (Node's ES module loader
// costs about 20 ms at start-up on a small machine). Modules a command does not need (the YAML
// parser, the table renderer) are only parsed, and run when a command imports them.
import { readFile, rm, writeFile } from 'node:fs/promises';
import { build } from 'esbuild';

const { version } = JSON.parse(await readFile('package.json', 'utf8'));
await rm('dist/bundle', { recursive: true, force: true });
const result = await build({
  entryPoints: ['src/bin.ts'],
  outfile: 'dist/conductor.cjs',
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  minify: true,
  sourcemap: 'linked',
  legalComments: 'linked',
  // commander loads node:child_process up front for a feature the CLI does not use.
  alias: { child_process: './lazy-child-process.cjs', 'node:child_process': './lazy-child-process.cjs' },
  // src/version.ts: the version is part of the bundle, not read from package.json at every start.
  define: { CONDUCTOR_CLI_VERSION: JSON.stringify(version) },
  metafile: true,
  logLevel: 'warning',
});
// What went into the bundle: scripts/pack.sh ships the licences of those packages with it.
await writeFile('dist/conductor.meta.json', JSON.stringify(result.metafile));
