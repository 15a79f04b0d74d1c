// Bundles the daemon for its installable package (scripts/pack.sh): `node bundle.mjs OUT` writes
// OUT/dist/main.js (ES modules, with the fleet's code in a chunk of its own that only fleet mode
// loads), OUT/proto/ (the protocol files etcd3 reads at run time, from dist/../proto), and
// OUT/THIRD-PARTY-LICENSES.txt (the licence of every package inside the bundle). Every
// dependency is inside, so the package installs without a registry and runs exactly the versions
// pnpm-lock.yaml pins and the tests ran.
import { cp, mkdir, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { build } from 'esbuild';
import { thirdPartyLicenses } from '../../packaging/licenses.mjs';

const out = process.argv[2];
if (out === undefined) {
  process.stderr.write('usage: node bundle.mjs OUTDIR\n');
  process.exit(2);
}
const here = import.meta.dirname;
await rm(join(out, 'dist'), { recursive: true, force: true });

const result = await build({
  entryPoints: { main: join(here, 'src/main.ts') },
  outdir: join(out, 'dist'),
  bundle: true,
  splitting: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  minify: true,
  keepNames: true,
  legalComments: 'none',
  metafile: true,
  // CommonJS packages inside an ES module bundle still call require() and read __dirname.
  banner: {
    js: [
      "import { createRequire as __scCreateRequire } from 'node:module';",
      "import { dirname as __scDirname } from 'node:path';",
      "import { fileURLToPath as __scFileURLToPath } from 'node:url';",
      'const require = __scCreateRequire(import.meta.url);',
      'const __filename = __scFileURLToPath(import.meta.url);',
      'const __dirname = __scDirname(__filename);',
    ].join(' '),
  },
  logLevel: 'warning',
});

// etcd3 loads `${__dirname}/../proto/rpc.proto`: beside dist/ in the package.
const requireHere = createRequire(join(here, 'package.json'));
const etcd3 = dirname(requireHere.resolve('etcd3/package.json'));
await rm(join(out, 'proto'), { recursive: true, force: true });
await cp(join(etcd3, 'proto'), join(out, 'proto'), { recursive: true });

await mkdir(out, { recursive: true });
await writeFile(
  join(out, 'THIRD-PARTY-LICENSES.txt'),
  await thirdPartyLicenses(result.metafile, process.cwd(), "The stream-conductor daemon's bundle (dist/)"),
);
