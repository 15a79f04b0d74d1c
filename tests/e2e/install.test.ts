/**
 * Installing as a service, with the real packages and the real installer: `scripts/pack.sh`
 * writes the two tarballs, `scripts/install.sh --root` installs them into a staging root (never
 * this machine's / or /etc). Checked: the layout and modes, the installed commands' versions,
 * the unit through `systemd-analyze verify`, the installed daemon run as systemd would run it
 * (the unit's environment, settings file, capabilities, umask and open-files limit, as an
 * unprivileged user through setpriv; systemd itself is not PID 1 here) serving a stream that the
 * installed CLI creates and real bytes cross, the readiness check, uninstall with and without
 * --purge, and every kind of bad installer argument refused with exit 2 and nothing changed.
 */

import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, chown, lstat, mkdir, readdir, readFile, readlink, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { ROOT, removeDir, tempDir } from '../helpers/daemon.js';
import { EchoBackend, roundTrip } from '../helpers/net.js';
import { freePortBlock } from '../helpers/ports.js';
import { killProcessesUsing } from '../helpers/processes.js';
import { alive, eventually } from '../helpers/wait.js';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(command, args, { ...options, timeout: 120_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

const INSTALL = join(ROOT, 'scripts/install.sh');
const PREFIX = '/usr/local';
const PKG = `${PREFIX}/lib/node_modules/@stream-conductor`;
const UNIT = '/etc/systemd/system/stream-conductor.service';
const ENV_FILE = '/etc/stream-conductor/conductor.env';
/** systemd's PATH for services. */
const SYSTEMD_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** The unprivileged user the daemon runs as here (the unit's stream-conductor user does not exist on this machine). */
const NOBODY = 65534;
const CAP_NET_BIND_SERVICE = 1n << 10n;

let work: string;
let root: string;
let cliTgz: string;
let daemonTgz: string;
const version = async (name: string): Promise<string> =>
  (JSON.parse(await readFile(join(ROOT, 'packages', name, 'package.json'), 'utf8')) as { version: string }).version;
const inRoot = (path: string): string => join(root, path);
const started: ChildProcess[] = [];

beforeAll(async () => {
  work = await tempDir();
  // The unprivileged user must reach the installed files and its state folder.
  await chmod(work, 0o755);
  root = join(work, 'root');
  await mkdir(root, { mode: 0o755 });
  const packed = await run('bash', [join(ROOT, 'scripts/pack.sh'), '--out', join(work, 'packed'), '--no-build']);
  expect(packed).toMatchObject({ code: 0 });
  [cliTgz, daemonTgz] = packed.stdout.trim().split('\n') as [string, string];
  expect(cliTgz).toMatch(/stream-conductor-cli-[0-9.]+\.tgz$/);
  expect(daemonTgz).toMatch(/stream-conductor-daemon-[0-9.]+\.tgz$/);
}, 120_000);

afterAll(async () => {
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  if (work !== undefined) {
    killProcessesUsing(work);
    await removeDir(work);
  }
});

/** Every file, link and folder under `dir`: type, mode, owner, and content or link target. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const entries: Record<string, string> = {};
  const walk = async (path: string): Promise<void> => {
    for (const name of (await readdir(path)).sort()) {
      const full = join(path, name);
      const info = await lstat(full);
      const key = full.slice(dir.length);
      const head = `${(info.mode & 0o7777).toString(8)} ${info.uid}:${info.gid}`;
      if (info.isSymbolicLink()) entries[key] = `link ${await readlink(full)}`;
      else if (info.isDirectory()) {
        entries[key] = `dir ${head}`;
        await walk(full);
      } else
        entries[key] = `file ${head} ${createHash('sha256')
          .update(await readFile(full))
          .digest('hex')}`;
    }
  };
  await walk(dir);
  return entries;
}

/** The settings of the unit file, as lists of values by key. */
function unitSettings(text: string): Map<string, string[]> {
  const settings = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const match = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (match) settings.set(match[1]!, [...(settings.get(match[1]!) ?? []), match[2]!]);
  }
  return settings;
}

/** VARIABLE=value lines of an environment file (the template writes no quotes). */
function environmentFile(text: string): Record<string, string> {
  const values: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const match = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line);
    if (match) values[match[1]!] = match[2]!;
  }
  return values;
}

function capabilities(status: string, field: string): bigint {
  const value = new RegExp(`^${field}:\\s*([0-9a-f]+)$`, 'm').exec(status)?.[1];
  if (value === undefined) throw new Error(`no ${field} in status`);
  return BigInt(`0x${value}`);
}

/** A port below 1024 that nothing holds on loopback (binding one needs CAP_NET_BIND_SERVICE). */
async function freePrivilegedPort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt += 1) {
    const port = 900 + Math.floor(Math.random() * 100);
    const free = await new Promise<boolean>((resolve) => {
      const server = createServer();
      server.once('error', () => resolve(false));
      server.listen({ port, host: '127.0.0.1', exclusive: true }, () => server.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error('no free port below 1024');
}

const install = (...args: string[]): Promise<Run> => run('bash', [INSTALL, '--root', root, ...args]);

describe('npm run pack and scripts/install.sh', () => {
  it('installs both packages, the unit and the settings file with their modes, and the commands run', async () => {
    const installed = await install(cliTgz, daemonTgz);
    expect(installed.stderr).toBe('');
    expect(installed).toMatchObject({ code: 0 });
    expect(installed.stdout).toContain(
      `installed @stream-conductor/cli and @stream-conductor/daemon ${await version('daemon')}`,
    );
    expect(installed.stdout).toContain(`wrote ${UNIT}`);
    expect(installed.stdout).toContain(`wrote ${ENV_FILE}`);

    // The commands, linked into the prefix's bin.
    expect(await readlink(inRoot(`${PREFIX}/bin/conductor`))).toBe(
      '../lib/node_modules/@stream-conductor/cli/bin/conductor.cjs',
    );
    expect(await readlink(inRoot(`${PREFIX}/bin/conductor-daemon`))).toBe(
      '../lib/node_modules/@stream-conductor/daemon/bin/conductor-daemon.js',
    );
    // The CLI is one file beside its manifest and the licences of what it bundles.
    const cliFiles = Object.keys(await snapshot(inRoot(`${PKG}/cli`)));
    expect(cliFiles.sort()).toEqual(['/THIRD-PARTY-LICENSES.txt', '/bin', '/bin/conductor.cjs', '/package.json']);
    for (const name of ['cli', 'daemon']) {
      const manifest = JSON.parse(await readFile(inRoot(`${PKG}/${name}/package.json`), 'utf8')) as Record<
        string,
        unknown
      >;
      expect(manifest).toMatchObject({ license: 'MIT', engines: { node: expect.stringMatching(/^>=20/) } });
      expect(manifest.bin).toBeDefined();
      expect(manifest.files).toBeDefined();
      expect(manifest.dependencies).toBeUndefined();
      expect(JSON.stringify(manifest)).not.toContain('workspace:');
    }
    // Everything installed is readable by the service's user and writable by root alone.
    for (const [path, entry] of Object.entries(await snapshot(inRoot(PKG)))) {
      if (entry.startsWith('link')) continue;
      const mode = Number.parseInt(entry.split(' ')[1]!, 8);
      expect(`${path} ${(mode & 0o022).toString(8)}`).toBe(`${path} 0`);
      expect(`${path} ${(mode & 0o004).toString(8)}`).toBe(`${path} 4`);
    }
    expect((await stat(inRoot(`${PKG}/cli/bin/conductor.cjs`))).mode & 0o777).toBe(0o755);
    expect((await stat(inRoot(`${PKG}/daemon/bin/conductor-daemon.js`))).mode & 0o777).toBe(0o755);
    expect((await stat(inRoot(`${PKG}/daemon/packaging/wait-ready.mjs`))).mode & 0o777).toBe(0o755);
    expect((await stat(inRoot(UNIT))).mode & 0o777).toBe(0o644);
    expect((await stat(inRoot('/etc/stream-conductor'))).mode & 0o777).toBe(0o755);
    expect((await stat(inRoot(ENV_FILE))).mode & 0o777).toBe(0o600);
    expect(await readFile(inRoot('/usr/local/lib/sysusers.d/stream-conductor.conf'), 'utf8')).toMatch(
      /^u stream-conductor - /,
    );

    // The unit: paths filled in.
    const unit = unitSettings(await readFile(inRoot(UNIT), 'utf8'));
    expect(unit.get('ExecStart')).toEqual([`${PREFIX}/bin/conductor-daemon`]);
    expect(unit.get('ExecStartPost')).toEqual([`${PKG}/daemon/packaging/wait-ready.mjs --pid \${MAINPID}`]);
    expect(unit.get('EnvironmentFile')).toEqual([ENV_FILE]);

    // The installed commands run from the staging root, with nothing of the workspace to find.
    const cli = await run(inRoot(`${PREFIX}/bin/conductor`), ['--version'], { cwd: '/' });
    expect(cli).toEqual({ code: 0, stdout: `${await version('cli')}\n`, stderr: '' });
    const daemon = await run(inRoot(`${PREFIX}/bin/conductor-daemon`), ['--version'], { cwd: '/' });
    expect(daemon).toEqual({ code: 0, stdout: `${await version('daemon')}\n`, stderr: '' });

    // The settings file names every setting of the daemon, commented out with its default.
    const help = (await run(inRoot(`${PREFIX}/bin/conductor-daemon`), ['--help'], { cwd: '/' })).stdout;
    const template = await readFile(inRoot(ENV_FILE), 'utf8');
    const variables = [...help.matchAll(/^ {2}--\S+(?: <value>)?\s+([A-Z][A-Z0-9_]+)\s+(.*)$/gm)];
    expect(variables.length).toBeGreaterThan(30);
    for (const [, variable, text] of variables) {
      expect(template).toMatch(new RegExp(`^#${variable}=`, 'm'));
      const fallback = /\(default (\S+)\)$/.exec(text!)?.[1];
      if (fallback !== undefined && variable !== 'CONDUCTOR_HOME') {
        expect(template).toMatch(new RegExp(`^#${variable}=${fallback.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`, 'm'));
      }
    }
    expect(template).toMatch(/^#CONDUCTOR_HOME=\/var\/lib\/stream-conductor$/m);
  });

  it('passes systemd-analyze verify', async () => {
    // scripts/test-deps.sh installs Debian's systemd package for it: missing is a failure, not a pass.
    const which = await run('sh', ['-c', 'command -v systemd-analyze']);
    expect(which).toMatchObject({ code: 0 });
    // The unit's commands, re-pointed into the staging root so that verify finds them there.
    const text = await readFile(inRoot(UNIT), 'utf8');
    const dir = join(work, 'verify');
    await mkdir(dir, { recursive: true });
    const copy = join(dir, 'stream-conductor.service');
    await writeFile(copy, text.replaceAll(`${PREFIX}/`, `${root}${PREFIX}/`));
    const verified = await run('systemd-analyze', ['verify', copy]);
    expect(verified).toEqual({ code: 0, stdout: '', stderr: '' });
  });

  it('runs the installed daemon as the unit says; the installed CLI creates a stream that forwards', async () => {
    const unitText = await readFile(inRoot(UNIT), 'utf8');
    const unit = unitSettings(unitText);
    expect(unit.get('AmbientCapabilities')).toEqual(['CAP_NET_BIND_SERVICE']);
    expect(unit.get('CapabilityBoundingSet')).toEqual(['CAP_NET_BIND_SERVICE']);
    expect(unit.get('NoNewPrivileges')).toEqual(['yes']);
    expect(unit.get('UMask')).toEqual(['0077']);
    expect(unit.get('KillMode')).toEqual(['process']);

    // The operator's edit of the settings file: every default uncommented as written, then this
    // test's loopback ports, state folder and a stream port below 1024.
    const state = join(work, 'state');
    await mkdir(state, { mode: 0o700 });
    await chown(state, NOBODY, NOBODY);
    const api = await freePortBlock(1);
    const streamPort = await freePrivilegedPort();
    const edits: Record<string, string> = {
      CONDUCTOR_HOME: state,
      STREAM_CONFIG_PATH: join(state, 'stream.d'),
      BIND_PORT: String(api),
      PORT_RANGE: `${streamPort}-${streamPort}`,
      CONDUCTOR_LISTEN_ADDRESS: '127.0.0.1',
      CONDUCTOR_HEALTH_INTERVAL: '0',
    };
    const edited = (await readFile(inRoot(ENV_FILE), 'utf8'))
      .split('\n')
      .map((line) => {
        const match = /^#([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line);
        if (match === null) return line;
        const [, name, value] = match as unknown as [string, string, string];
        if (edits[name] !== undefined) return `${name}=${edits[name]}`;
        return value === '' ? line : `${name}=${value}`;
      })
      .join('\n');
    await writeFile(inRoot(ENV_FILE), edited);

    // The environment systemd gives the service: its PATH, Environment=, then EnvironmentFile=.
    const env: Record<string, string> = { PATH: SYSTEMD_PATH };
    for (const assignment of unit.get('Environment') ?? []) {
      const [name, ...value] = assignment.split('=');
      env[name!] = value.join('=');
    }
    Object.assign(env, environmentFile(await readFile(inRoot(unit.get('EnvironmentFile')![0]!), 'utf8')));
    expect(env.CONDUCTOR_HOME).toBe(state);

    // Its user (nobody here), capabilities, no new privileges, umask and open-files limit. The
    // limit is the unit's, or this machine's hard limit when that is lower (raising it needs a
    // capability this test does not assume).
    const hard = Number(/^Max open files\s+\S+\s+(\S+)/m.exec(await readFile('/proc/self/limits', 'utf8'))?.[1]);
    const nofile = Math.min(Number(unit.get('LimitNOFILE')![0]), Number.isFinite(hard) ? hard : Infinity);
    const caps = unit.get('AmbientCapabilities')![0]!.toLowerCase().replace(/^cap_/, '');
    const execStart = inRoot(unit.get('ExecStart')![0]!);
    const daemon = spawn(
      'prlimit',
      [
        `--nofile=${nofile}:${nofile}`,
        'setpriv',
        `--reuid=${NOBODY}`,
        `--regid=${NOBODY}`,
        '--clear-groups',
        `--inh-caps=-all,+${caps}`,
        `--ambient-caps=-all,+${caps}`,
        `--bounding-set=-all,+${caps}`,
        '--no-new-privs',
        '--',
        'sh',
        '-c',
        `umask ${unit.get('UMask')![0]} && exec "$0"`,
        execStart,
      ],
      { env, cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] },
    );
    started.push(daemon);
    let logs = '';
    daemon.stdout.on('data', (chunk: Buffer) => {
      logs += chunk.toString('utf8');
    });
    daemon.stderr.on('data', (chunk: Buffer) => {
      logs += chunk.toString('utf8');
    });
    const exited = new Promise<number | null>((resolve) => daemon.once('exit', (code) => resolve(code)));

    // ExecStartPost: the installed readiness check returns once the API answers.
    const [waitCommand, ...waitArgs] = unit
      .get('ExecStartPost')![0]!
      .replace('${MAINPID}', String(daemon.pid))
      .split(' ');
    const ready = await run(inRoot(waitCommand!), waitArgs, { env, cwd: '/' });
    expect({ ...ready, logs }).toMatchObject({ code: 0 });
    expect(logs).toContain('"msg":"ready"');

    // Every process of the service runs as the user, with CAP_NET_BIND_SERVICE and nothing else.
    const pids = [daemon.pid!, ...(await masterAndWorkers(state))];
    expect(pids.length).toBeGreaterThanOrEqual(3);
    for (const pid of pids) {
      const status = await readFile(`/proc/${pid}/status`, 'utf8');
      expect(/^Uid:\s+(\d+)\s+(\d+)/m.exec(status)?.slice(1)).toEqual([String(NOBODY), String(NOBODY)]);
      expect(capabilities(status, 'CapBnd')).toBe(CAP_NET_BIND_SERVICE);
      expect(capabilities(status, 'CapEff')).toBe(CAP_NET_BIND_SERVICE);
      expect(/^NoNewPrivs:\s+1$/m.test(status)).toBe(true);
    }

    // The installed CLI creates the stream; bytes cross nginx (a port below 1024) to the backend.
    const backend = await EchoBackend.start('installed');
    try {
      const cli = await run(
        inRoot(`${PREFIX}/bin/conductor`),
        ['--url', `http://127.0.0.1:${api}`, 'create', String(streamPort), `127.0.0.1:${backend.port}`],
        { cwd: '/', env: { PATH: SYSTEMD_PATH } },
      );
      expect(cli).toEqual({ code: 0, stdout: `${streamPort} -> 127.0.0.1:${backend.port} live\n`, stderr: '' });
      expect(await roundTrip(streamPort, 'through the installed packages')).toBe(
        'installed:through the installed packages',
      );
    } finally {
      await backend.close();
    }
    // The state is the user's alone (UMask=0077).
    const store = await stat(join(state, 'streams.json'));
    expect([store.uid, store.mode & 0o777]).toEqual([NOBODY, 0o600]);

    // systemctl stop: SIGTERM to the daemon, which stops its nginx and exits 0.
    const masters = await masterAndWorkers(state);
    daemon.kill('SIGTERM');
    expect(await exited).toBe(0);
    for (const pid of masters)
      await eventually(
        () => alive(pid),
        (running) => !running,
        10_000,
      );
  });

  it('the readiness check gives up at once when the daemon exits before it is ready', async () => {
    const waitReady = inRoot(`${PKG}/daemon/packaging/wait-ready.mjs`);
    const failing = spawn(inRoot(`${PREFIX}/bin/conductor-daemon`), [], {
      env: { PATH: SYSTEMD_PATH, CONDUCTOR_HOME: join(work, 'failing'), PORT_RANGE: 'not-a-range' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    started.push(failing);
    const code = await new Promise<number | null>((resolve) => failing.once('exit', resolve));
    expect(code).toBe(1);
    const waited = await run(waitReady, ['--pid', String(failing.pid), '--timeout', '60'], {
      env: { PATH: SYSTEMD_PATH, BIND_PORT: String(await freePortBlock(1)) },
    });
    expect(waited).toMatchObject({ code: 1, stderr: expect.stringContaining('exited before it was ready') });
    expect(await run(waitReady, ['--pid'])).toMatchObject({ code: 2 });
  });

  it('the readiness check knows an API on HTTPS that requires client certificates', async () => {
    const tls = join(work, 'tls');
    await mkdir(tls);
    const made = await run('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
      '-keyout',
      join(tls, 'key.pem'),
      '-out',
      join(tls, 'cert.pem'),
    ]);
    expect(made).toMatchObject({ code: 0 });
    await chmod(join(tls, 'key.pem'), 0o600);
    const api = await freePortBlock(1);
    const env = {
      PATH: SYSTEMD_PATH,
      CONDUCTOR_HOME: join(work, 'tls-home'),
      BIND_PORT: String(api),
      PORT_RANGE: `${api + 1}-${api + 1}`,
      CONDUCTOR_TOKEN: 'a-token-of-the-readiness-test',
      CONDUCTOR_TLS_CERT: join(tls, 'cert.pem'),
      CONDUCTOR_TLS_KEY: join(tls, 'key.pem'),
      CONDUCTOR_TLS_CLIENT_CA: join(tls, 'cert.pem'),
    };
    const daemon = spawn(inRoot(`${PREFIX}/bin/conductor-daemon`), [], {
      env,
      cwd: '/',
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    started.push(daemon);
    let logs = '';
    daemon.stderr.on('data', (chunk: Buffer) => {
      logs += chunk.toString('utf8');
    });
    const exited = new Promise<number | null>((resolve) => daemon.once('exit', (code) => resolve(code)));
    const { CONDUCTOR_TOKEN: _token, ...unitEnv } = env;
    const ready = await run(inRoot(`${PKG}/daemon/packaging/wait-ready.mjs`), ['--pid', String(daemon.pid)], {
      env: unitEnv,
    });
    expect({ ...ready, logs }).toMatchObject({
      code: 0,
      stderr: `wait-ready: https://127.0.0.1:${api}/status answers\n`,
    });
    expect(logs).toContain('"msg":"ready"');
    daemon.kill('SIGTERM');
    expect(await exited).toBe(0);
  });

  it("the installed daemon loads fleet mode's code, etcd's protocol files included", async () => {
    const api = await freePortBlock(1);
    const etcd = await freePortBlock(1); // nothing listens there: the daemon serves from its own file meanwhile
    const env = {
      PATH: SYSTEMD_PATH,
      CONDUCTOR_HOME: join(work, 'fleet-home'),
      BIND_PORT: String(api),
      PORT_RANGE: `${etcd + 1}-${etcd + 1}`,
      CONDUCTOR_LISTEN_ADDRESS: '127.0.0.1',
      CONDUCTOR_STORE: `etcd://127.0.0.1:${etcd}`,
      CONDUCTOR_HOST_ID: 'installed',
    };
    const daemon = spawn(inRoot(`${PREFIX}/bin/conductor-daemon`), [], {
      env,
      cwd: '/',
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    started.push(daemon);
    let logs = '';
    daemon.stderr.on('data', (chunk: Buffer) => {
      logs += chunk.toString('utf8');
    });
    const exited = new Promise<number | null>((resolve) => daemon.once('exit', (code) => resolve(code)));
    const waitReady = inRoot(`${PKG}/daemon/packaging/wait-ready.mjs`);
    const ready = await run(waitReady, ['--pid', String(daemon.pid), '--timeout', '60'], { env });
    expect({ ...ready, logs }).toMatchObject({ code: 0 });
    expect(logs).toContain(`"store":{"etcd":["http://127.0.0.1:${etcd}"]`);
    daemon.kill('SIGTERM');
    expect(await exited).toBe(0);
  });

  it('refuses each kind of bad argument with exit 2 and changes nothing', async () => {
    const other = join(work, 'other');
    await mkdir(join(other, 'package'), { recursive: true });
    await writeFile(join(other, 'package/package.json'), '{"name":"left-pad","version":"1.0.0"}');
    const foreign = join(work, 'left-pad-1.0.0.tgz');
    expect(await run('tar', ['-czf', foreign, '-C', other, 'package'])).toMatchObject({ code: 0 });
    // The daemon's package with another version.
    const older = join(work, 'older');
    await mkdir(older);
    expect(await run('tar', ['-xzf', daemonTgz, '-C', older])).toMatchObject({ code: 0 });
    const manifestPath = join(older, 'package/package.json');
    const manifest = JSON.parse(await readFile(manifestPath, 'utf8')) as { version: string };
    await writeFile(manifestPath, JSON.stringify({ ...manifest, version: '0.0.1' }));
    const olderTgz = join(work, 'stream-conductor-daemon-0.0.1.tgz');
    expect(await run('tar', ['-czf', olderTgz, '-C', older, 'package'])).toMatchObject({ code: 0 });
    const notATarball = join(work, 'notes.txt');
    await writeFile(notATarball, 'not a package\n');

    const cases: Array<[string, string[], RegExp]> = [
      ['an unknown option', ['--frobnicate', cliTgz, daemonTgz], /unknown option: --frobnicate/],
      ['an option without its value', [cliTgz, daemonTgz, '--prefix'], /--prefix needs a value/],
      ['a relative prefix', ['--prefix', 'usr/local', cliTgz, daemonTgz], /--prefix must be an absolute path/],
      ['a prefix with a space', ['--prefix', '/opt/stream conductor', cliTgz, daemonTgz], /may hold only/],
      ['a prefix with ..', ['--prefix', '/usr/../etc', cliTgz, daemonTgz], /may not hold \. or \.\. parts/],
      ['the prefix /', ['--prefix', '/', cliTgz, daemonTgz], /--prefix may not be \//],
      ['a relative unit folder', ['--unit-dir', 'systemd', cliTgz, daemonTgz], /--unit-dir must be an absolute path/],
      ['no packages', [], /give the two packages/],
      ['one package', [daemonTgz], /give the two packages/],
      ['three packages', [cliTgz, daemonTgz, daemonTgz], /give the two packages/],
      ['the same package twice', [daemonTgz, daemonTgz], /two daemon packages given/],
      ['a missing file', [cliTgz, join(work, 'missing.tgz')], /no such file/],
      ['a file that is no package', [cliTgz, notATarball], /is not an npm package/],
      ['another package', [cliTgz, foreign], /is left-pad, not a stream-conductor package/],
      ['packages of two versions', [cliTgz, olderTgz], /different versions/],
      ['--purge without --uninstall', ['--purge', cliTgz, daemonTgz], /--purge goes with --uninstall/],
      ['--uninstall with packages', ['--uninstall', cliTgz, daemonTgz], /--uninstall takes no packages/],
    ];
    const before = await snapshot(root);
    expect(Object.keys(before).length).toBeGreaterThan(10);
    for (const [what, args, message] of cases) {
      const refused = await install(...args);
      expect({ what, code: refused.code, stdout: refused.stdout }).toEqual({ what, code: 2, stdout: '' });
      expect(refused.stderr).toMatch(message);
      expect(await snapshot(root)).toEqual(before);
    }
    // A staging root whose etc is a link to a folder outside it: nothing is written through the link.
    const linked = join(work, 'linked-root');
    const outside = join(work, 'outside-etc');
    await mkdir(linked);
    await mkdir(outside);
    await symlink(outside, join(linked, 'etc'));
    const escaped = await run('bash', [INSTALL, '--root', linked, cliTgz, daemonTgz]);
    expect(escaped).toMatchObject({ code: 2, stdout: '' });
    expect(escaped.stderr).toMatch(/outside the root \(a symbolic link\?\)/);
    expect(await readdir(outside)).toEqual([]);
    expect(await readdir(linked)).toEqual(['etc']);
    const noRoot = await run('bash', [INSTALL, '--root', join(work, 'absent'), cliTgz, daemonTgz]);
    expect(noRoot).toMatchObject({ code: 2, stdout: '', stderr: expect.stringMatching(/is not a directory/) });
    const relativeRoot = await run('bash', [INSTALL, '--root', 'staging', cliTgz, daemonTgz], { cwd: work });
    expect(relativeRoot).toMatchObject({ code: 2, stderr: expect.stringMatching(/--root must be an absolute path/) });
    expect(await snapshot(root)).toEqual(before);
  });

  it('puts the user entry where systemd-sysusers reads it whatever the prefix', async () => {
    const other = join(work, 'opt-root');
    await mkdir(other, { mode: 0o755 });
    const installed = await run('bash', [INSTALL, '--root', other, '--prefix', '/opt/sc', cliTgz, daemonTgz]);
    expect(installed).toMatchObject({ code: 0, stderr: '' });
    expect(installed.stdout).toContain('wrote /usr/local/lib/sysusers.d/stream-conductor.conf');
    expect(await readFile(join(other, '/usr/local/lib/sysusers.d/stream-conductor.conf'), 'utf8')).toMatch(
      /^u stream-conductor - /,
    );
    const cli = await run(join(other, '/opt/sc/bin/conductor'), ['--version'], { cwd: '/' });
    expect(cli).toMatchObject({ code: 0, stdout: `${await version('cli')}\n` });
    const removed = await run('bash', [INSTALL, '--uninstall', '--purge', '--root', other, '--prefix', '/opt/sc']);
    expect(removed).toMatchObject({ code: 0, stderr: '' });
    const left = Object.entries(await snapshot(other)).filter(([, entry]) => !entry.startsWith('dir '));
    expect(left).toEqual([]);
  });

  it('uninstalls: the settings and state stay until --purge, and an install never overwrites the settings', async () => {
    // What the service would have kept in its StateDirectory.
    await mkdir(inRoot('/var/lib/stream-conductor'), { recursive: true });
    await writeFile(inRoot('/var/lib/stream-conductor/streams.json'), '{"streams":[]}\n');
    const settings = await readFile(inRoot(ENV_FILE), 'utf8');

    const removed = await install('--uninstall');
    expect(removed).toMatchObject({ code: 0, stderr: '' });
    expect(removed.stdout).toContain(`removed ${UNIT}`);
    expect(removed.stdout).toContain('kept /etc/stream-conductor (--purge removes it)');
    expect(await leftFiles()).toEqual([
      '/etc/stream-conductor/conductor.env',
      '/var/lib/stream-conductor/streams.json',
    ]);

    // Installed again: the operator's settings, and the mode of their folder, are kept as they were.
    await chmod(inRoot('/etc/stream-conductor'), 0o750);
    const again = await install(cliTgz, daemonTgz);
    expect(again).toMatchObject({ code: 0, stderr: '' });
    expect(again.stdout).toContain(`kept ${ENV_FILE}`);
    expect(await readFile(inRoot(ENV_FILE), 'utf8')).toBe(settings);
    expect((await stat(inRoot('/etc/stream-conductor'))).mode & 0o777).toBe(0o750);

    const purged = await install('--uninstall', '--purge');
    expect(purged).toMatchObject({ code: 0, stderr: '' });
    expect(purged.stdout).toContain('removed /etc/stream-conductor');
    expect(purged.stdout).toContain('removed /var/lib/stream-conductor');
    expect(await leftFiles()).toEqual([]);
    // A second uninstall finds nothing to do.
    expect(await install('--uninstall', '--purge')).toEqual({ code: 0, stdout: '', stderr: '' });
  });
});

/** Files and links left under the staging root (empty folders of the prefix may stay). */
async function leftFiles(): Promise<string[]> {
  const entries = await snapshot(root);
  return Object.keys(entries)
    .filter((path) => !entries[path]!.startsWith('dir'))
    .sort();
}

/** The nginx masters and workers whose command line names this state folder's configuration. */
async function masterAndWorkers(state: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^[0-9]+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.startsWith('nginx: master process') && cmdline.includes(state)) {
      pids.push(Number(entry));
      const children = await readFile(`/proc/${entry}/task/${entry}/children`, 'utf8').catch(() => '');
      pids.push(...children.split(' ').filter(Boolean).map(Number));
    }
  }
  return pids;
}
