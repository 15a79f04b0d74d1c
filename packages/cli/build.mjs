// Bundles the CLI (dist/bundle/): the command starts for every call, and a bundle starts several
// times faster than a tree of ES modules. Code splitting keeps what one command does not need
// (the YAML parser, the table renderer) in chunks loaded only by the commands that use them.
import { rm } from 'node:fs/promises';
import { build } from 'esbuild';

await rm('dist/bundle', { recursive: true, force: true });
await build({
  entryPoints: { conductor: 'src/bin.ts' },
  outdir: 'dist/bundle',
  outExtension: { '.js': '.mjs' },
  bundle: true,
  splitting: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  minify: true,
  sourcemap: 'linked',
  legalComments: 'linked',
  // cli-table3 and its dependencies are CommonJS: give the bundle a require for them.
  banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
  logLevel: 'warning',
});
