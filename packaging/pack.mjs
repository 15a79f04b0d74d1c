// Builds the two installable packages from a built workspace (scripts/pack.sh runs it):
// `node packaging/pack.mjs OUTDIR` writes OUTDIR/stream-conductor-cli-<version>.tgz and
// OUTDIR/stream-conductor-daemon-<version>.tgz with `npm pack`, and prints their paths.
// Neither has a dependency: the CLI is its one bundled file (packages/cli/build.mjs), the daemon
// its bundle (packages/daemon/bundle.mjs), so they install without a registry and run the very
// versions pnpm-lock.yaml pins. The daemon's package also carries what scripts/install.sh puts in
// place: the systemd unit, its readiness check and the settings file template (packaging/).
import { execFileSync } from 'node:child_process';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { envTemplate } from './env-template.mjs';
import { thirdPartyLicenses } from './licenses.mjs';

const root = resolve(import.meta.dirname, '..');
const out = resolve(process.argv[2] ?? join(root, 'packed'));

async function manifestOf(name) {
  return JSON.parse(await readFile(join(root, 'packages', name, 'package.json'), 'utf8'));
}

/** The published manifest: what npm needs to install and show it, and no dependencies. */
function published(source, fields) {
  return {
    name: source.name,
    version: source.version,
    description: source.description,
    license: source.license,
    engines: source.engines,
    ...fields,
  };
}

/** npm pack in `dir`; returns the tarball's path in `out`. */
function npmPack(dir) {
  const text = execFileSync('npm', ['pack', '--json', '--pack-destination', out], {
    cwd: dir,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [{ filename }] = JSON.parse(text);
  return join(out, filename);
}

async function stageCli(stage) {
  const source = await manifestOf('cli');
  const dir = join(stage, 'cli');
  await mkdir(join(dir, 'bin'), { recursive: true });
  // One file: the bundle with a #! line, without its source map reference (the map stays home).
  const bundle = await readFile(join(root, 'packages/cli/dist/conductor.cjs'), 'utf8');
  const body = bundle.replace(/\n\/\/# sourceMappingURL=\S+\s*$/, '\n');
  await writeFile(join(dir, 'bin/conductor.cjs'), `#!/usr/bin/env node\n${body}`, { mode: 0o755 });
  const meta = JSON.parse(await readFile(join(root, 'packages/cli/dist/conductor.meta.json'), 'utf8'));
  await writeFile(
    join(dir, 'THIRD-PARTY-LICENSES.txt'),
    await thirdPartyLicenses(meta, join(root, 'packages/cli'), "The conductor command's bundle (bin/conductor.cjs)"),
  );
  const manifest = published(source, {
    bin: { conductor: 'bin/conductor.cjs' },
    files: ['bin/conductor.cjs', 'THIRD-PARTY-LICENSES.txt'],
  });
  await writeFile(join(dir, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  return dir;
}

async function stageDaemon(stage) {
  const source = await manifestOf('daemon');
  const dir = join(stage, 'daemon');
  execFileSync(process.execPath, [join(root, 'packages/daemon/bundle.mjs'), dir], {
    cwd: join(root, 'packages/daemon'),
    stdio: 'inherit',
  });
  await mkdir(join(dir, 'bin'), { recursive: true });
  await copyFile(join(root, 'packages/daemon/bin/conductor-daemon.js'), join(dir, 'bin/conductor-daemon.js'));
  await chmod(join(dir, 'bin/conductor-daemon.js'), 0o755);
  await mkdir(join(dir, 'packaging'), { recursive: true });
  await copyFile(join(root, 'packaging/stream-conductor.service'), join(dir, 'packaging/stream-conductor.service'));
  await copyFile(join(root, 'packaging/wait-ready.mjs'), join(dir, 'packaging/wait-ready.mjs'));
  await chmod(join(dir, 'packaging/wait-ready.mjs'), 0o755);
  const { settingRows } = await import(join(root, 'packages/daemon/dist/config/settings.js'));
  await writeFile(join(dir, 'packaging/conductor.env'), envTemplate(settingRows()));
  const manifest = published(source, {
    type: 'module',
    os: ['linux'],
    bin: { 'conductor-daemon': 'bin/conductor-daemon.js' },
    files: ['bin', 'dist', 'proto', 'packaging', 'THIRD-PARTY-LICENSES.txt'],
  });
  await writeFile(join(dir, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  return dir;
}

await mkdir(out, { recursive: true });
const stage = await mkdtemp(join(tmpdir(), 'stream-conductor-pack-'));
try {
  const tarballs = [npmPack(await stageCli(stage)), npmPack(await stageDaemon(stage))];
  process.stdout.write(`${tarballs.join('\n')}\n`);
} finally {
  await rm(stage, { recursive: true, force: true });
}
