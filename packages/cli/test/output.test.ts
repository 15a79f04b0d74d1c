/**
 * The CLI's output formats (-o json|yaml|wide|name) on each command's data: which command takes
 * which format, what each prints, YAML that reads back to the JSON, and the watch loop of
 * `ls --watch` printing a listing per change, not per look.
 */
import { describe, expect, it } from '@jest/globals';
import {
  type ApplyResult,
  type AuditEvent,
  ConductorError,
  type CreateResult,
  type DaemonStatus,
  ErrorCode,
  type StreamView,
} from '@stream-conductor/shared';
import { parse as parseYaml } from 'yaml';
import type { ApiClient } from '../src/client.js';
import { printApplied } from '../src/commands/apply.js';
import { printCreated } from '../src/commands/create.js';
import { type DiffResult, printDiff } from '../src/commands/diff.js';
import { printDraining } from '../src/commands/drain.js';
import { printEvents } from '../src/commands/events.js';
import { printFreePort } from '../src/commands/free-port.js';
import { printStream } from '../src/commands/get.js';
import { printStreams } from '../src/commands/ls.js';
import { parseWatchInterval, watchStreams } from '../src/commands/ls-watch.js';
import { printRemoved } from '../src/commands/rm.js';
import { printStatus } from '../src/commands/status.js';
import { printWaited } from '../src/commands/wait.js';
import { createOutput, type Output } from '../src/output.js';
import { COMMAND_FORMATS, chooseFormat, OUTPUT_FORMATS, type OutputFormatName } from '../src/output-formats.js';

interface Captured {
  output: Output;
  stdout: () => string;
  stderr: () => string;
}

function sink(isTTY = false): { stream: NodeJS.WriteStream; text: () => string } {
  let text = '';
  const stream = {
    isTTY,
    write: (chunk: string) => {
      text += chunk;
      return true;
    },
  } as unknown as NodeJS.WriteStream;
  return { stream, text: () => text };
}

async function capture(command: string, format: OutputFormatName | undefined): Promise<Captured> {
  const out = sink();
  const err = sink();
  const output = createOutput({
    json: false,
    format: await chooseFormat(command, format, false),
    color: false,
    env: {},
    stdout: out.stream,
    stderr: err.stream,
  });
  return { output, stdout: out.text, stderr: err.text };
}

/** Strings YAML could read as something else, or that need quoting or escaping. */
const AWKWARD = {
  yes: 'yes',
  no: 'off',
  octal: '0o10',
  exp: '1e3',
  nil: 'null',
  tilde: '~',
  empty: '',
  dash: '- a',
  hash: '#x',
  colon: 'a: b',
  escape: '\u001b[31mred',
  lines: 'one\ntwo\n',
  quote: '"quoted" \'too\'',
  unicode: 'café ✓',
  long: 'x'.repeat(200),
  digits: '9000',
  time: '2026-12-05T07:35:13Z',
  sexagesimal: '1:20',
  merge: '<<',
  value: '=',
  hex: '0x1F',
  y: 'n',
};

const stream = (port: number, extra: Partial<StreamView> = {}): StreamView => ({
  port,
  protocol: 'tcp',
  backends: [
    { address: '127.0.0.1:2200' },
    { address: 'db.internal:5432', weight: 3 },
    { address: '[::1]:80', backup: true },
  ],
  balance: 'least-conn',
  allow: ['192.0.2.0/24', '2001:db8::/32'],
  proxyProtocol: false,
  labels: { env: 'prod', team: 'db' },
  createdAt: '2026-12-05T07:35:13.039Z',
  state: 'live',
  ...extra,
});

const LISTING: StreamView[] = [
  stream(9000, {
    listenAddress: '127.0.0.2',
    maxConnections: 100,
    maxConnectionsPerClient: 4,
    uploadRate: 524288,
    downloadRate: 10485760,
    expiresAt: '2026-12-06T00:00:00.000Z',
    description: 'reports replica',
  }),
  stream(9001, { protocol: 'udp', allow: [], labels: AWKWARD, state: 'failed', reason: 'bind() failed' }),
  stream(9002, { state: 'draining', openSessions: 3, drainingUntil: '2026-12-05T08:00:00.000Z', labels: {} }),
];

const CREATED: CreateResult = { stream: LISTING[0] as StreamView, warnings: [], change: 'created' };
const STATUS: DaemonStatus = {
  version: '1.0.0',
  mode: 'managed',
  portRange: { start: 9000, end: 9009 },
  streams: { total: 3, live: 1, failed: 1, draining: 1 },
  nginx: { state: 'running', pid: 42, restarts: 0, lastReload: { at: '2026-12-05T07:35:13.039Z', ok: true } },
  nginxInstances: [{ id: 0, streams: 3, state: 'running', pid: 42, restarts: 0, workers: 2, drainingWorkers: 0 }],
  failed: [{ port: 9001, backends: '127.0.0.1:2200', reason: 'bind() failed' }],
  problems: ['an old file was not adopted: "a: b"'],
  startedAt: '2026-12-05T07:00:00.000Z',
};
const EVENTS: AuditEvent[] = [
  { at: '2026-12-05T07:35:13.039Z', actor: 'ops', remote: '127.0.0.1', action: 'create', ports: [9000], result: 'ok' },
  {
    at: '2026-12-05T07:36:00.000Z',
    actor: 'ci',
    remote: '::1',
    action: 'apply',
    ports: [9001, 9002],
    detail: 'yes: no',
    result: 'refused',
    code: 'NGINX_REJECTED',
    message: 'nginx: [emerg] "x"',
  },
];
const APPLIED: ApplyResult = {
  dryRun: true,
  applied: false,
  plan: { create: [9003], update: [9000], delete: [], unchanged: [9001] },
  warnings: [],
};
const DIFF: DiffResult = {
  plan: APPLIED.plan,
  diffs: [
    { port: 9000, action: 'update', changes: ['labels: env=dev -> env=prod'] },
    { port: 9003, action: 'create', changes: [], summary: '-> 127.0.0.1:2200' },
  ],
};

/** Each command's printer with the data it prints as JSON, and the ports it prints with -o name. */
const PRINTERS: Array<{
  command: string;
  data: unknown;
  print: (output: Output) => void | Promise<void>;
  names?: number[];
}> = [
  { command: 'ls', data: LISTING, print: (output) => printStreams(LISTING, output), names: [9000, 9001, 9002] },
  { command: 'get', data: LISTING[0], print: (output) => printStream(LISTING[0] as StreamView, output), names: [9000] },
  { command: 'create', data: CREATED, print: (output) => printCreated(CREATED, output, false), names: [9000] },
  { command: 'renew', data: CREATED, print: (output) => printCreated(CREATED, output, false), names: [9000] },
  {
    command: 'rm',
    data: { port: 9000, warnings: [] },
    print: (output) => printRemoved({ port: 9000, warnings: [] }, output),
    names: [9000],
  },
  {
    command: 'drain',
    data: LISTING[2],
    print: (output) => printDraining({ stream: LISTING[2] as StreamView }, output),
    names: [9002],
  },
  {
    command: 'wait',
    data: LISTING[0],
    print: (output) => printWaited(9000, 'live', LISTING[0], output),
    names: [9000],
  },
  { command: 'free-port', data: { port: 9004 }, print: (output) => printFreePort(9004, output), names: [9004] },
  { command: 'status', data: STATUS, print: (output) => printStatus(STATUS, output, 'http://127.0.0.1:5000') },
  { command: 'events', data: EVENTS, print: (output) => printEvents(EVENTS, output) },
  { command: 'apply', data: APPLIED, print: (output) => printApplied(APPLIED, output) },
  { command: 'diff', data: DIFF, print: (output) => printDiff(DIFF, output) },
];

describe('chooseFormat', () => {
  const commands = [...Object.keys(COMMAND_FORMATS), 'top', 'completion'];
  it.each(commands.flatMap((command) => OUTPUT_FORMATS.map((format) => [command, format] as const)))(
    '%s -o %s: taken exactly when the table lists it (json only for a command it does not list)',
    async (command, format) => {
      const takes = COMMAND_FORMATS[command] ?? ['json'];
      const chosen = chooseFormat(command, format, false);
      if (takes.includes(format)) await expect(chosen).resolves.toMatchObject({ name: format });
      else {
        await expect(chosen).rejects.toMatchObject({ code: ErrorCode.Usage });
        await expect(chosen).rejects.toThrow(`${command} does not print -o ${format}: it takes -o `);
      }
    },
  );

  it('names the formats for one that does not exist, and the ones the command takes', async () => {
    await expect(chooseFormat('ls', 'xml', false)).rejects.toThrow('-o: one of json, yaml, wide or name, got "xml"');
    await expect(chooseFormat('ls', '', false)).rejects.toThrow('got ""');
    await expect(chooseFormat('ls', 'JSON', false)).rejects.toMatchObject({ code: ErrorCode.Usage });
    await expect(chooseFormat('status', 'name', false)).rejects.toThrow(
      'status does not print -o name: it takes -o json or yaml',
    );
    await expect(chooseFormat('get', 'wide', false)).rejects.toThrow('it takes -o json, yaml or name');
  });

  it('takes --json as -o json, and refuses --json with another -o', async () => {
    await expect(chooseFormat('ls', undefined, true)).resolves.toMatchObject({ name: 'json' });
    await expect(chooseFormat('ls', 'json', true)).resolves.toMatchObject({ name: 'json' });
    await expect(chooseFormat('ls', undefined, false)).resolves.toMatchObject({ name: 'text' });
    await expect(chooseFormat('ls', 'yaml', true)).rejects.toThrow('--json is -o json: give one of --json and -o yaml');
    await expect(chooseFormat('top', undefined, true)).resolves.toMatchObject({ name: 'json' });
  });
});

describe('each command in each format it takes', () => {
  it.each(PRINTERS.map((printer) => [printer.command, printer] as const))(
    '%s: json is the data, yaml reads back to it, name is its ports',
    async (command, printer) => {
      const json = await capture(command, 'json');
      await printer.print(json.output);
      // free-port's --json has always been one line.
      expect(json.stdout()).toBe(
        `${command === 'free-port' ? JSON.stringify(printer.data) : JSON.stringify(printer.data, null, 2)}\n`,
      );
      const yaml = await capture(command, 'yaml');
      await printer.print(yaml.output);
      // The same data for a YAML 1.2 reader and a YAML 1.1 one (PyYAML reads yes, off, times as other types).
      expect(parseYaml(yaml.stdout())).toEqual(JSON.parse(json.stdout()));
      expect(parseYaml(yaml.stdout(), { version: '1.1' })).toEqual(JSON.parse(json.stdout()));
      // No anchors or aliases: each value written out where it is.
      expect(yaml.stdout()).not.toMatch(/(?:^|[:-] )[&*][A-Za-z0-9]+(?:\s|$)/m);
      expect(yaml.stdout().endsWith('\n') && !yaml.stdout().endsWith('\n\n')).toBe(true);
      if (printer.names !== undefined) {
        const name = await capture(command, 'name');
        await printer.print(name.output);
        expect(name.stdout()).toBe(`${printer.names.join('\n')}\n`);
      }
      // Data only on stdout: what a command says besides goes to stderr in every format.
      expect(json.stdout()).not.toMatch(/conductor:|warning:/);
    },
  );

  it('keeps control characters escaped in YAML, and they read back as they were', async () => {
    const yaml = await capture('ls', 'yaml');
    await printStreams(LISTING, yaml.output);
    expect(yaml.stdout()).not.toContain('\u001b');
    expect(yaml.stdout()).toContain('\\e[31mred');
    const back = parseYaml(yaml.stdout()) as StreamView[];
    expect(back[1]?.labels).toEqual(AWKWARD);
    expect(typeof back[1]?.labels.digits).toBe('string');
    expect(typeof back[1]?.labels.yes).toBe('string');
  });

  it('prints nothing on stdout for an empty listing with -o name, [] with json and yaml', async () => {
    for (const [format, expected] of [
      ['name', ''],
      ['json', '[]\n'],
      ['yaml', '[]\n'],
    ] as const) {
      const run = await capture('ls', format);
      await printStreams([], run.output);
      expect([run.stdout(), run.stderr()]).toEqual([expected, '']);
    }
    const text = await capture('ls', undefined);
    await printStreams([], text.output);
    expect([text.stdout(), text.stderr()]).toEqual(['', 'no streams\n']);
  });

  it('prints the port alone for create -o name and keeps warnings on stderr', async () => {
    const run = await capture('create', 'name');
    printCreated({ ...CREATED, warnings: ['the backend did not answer'] }, run.output, true);
    expect(run.stdout()).toBe('9000\n');
    expect(run.stderr()).toBe('warning: the backend did not answer\n');
  });

  it('adds listen address, balance, allow-list, limits, TLS and creation time with -o wide', async () => {
    const wide = await capture('ls', 'wide');
    await printStreams(LISTING, wide.output, { now: new Date('2026-12-05T08:00:00Z') });
    const lines = wide.stdout().split('\n');
    const cells = (line: string | undefined): string[] =>
      (line ?? '')
        .split('│')
        .slice(1, -1)
        .map((cell) => cell.trim());
    expect(cells(lines[1])).toEqual([
      'PORT',
      'PROTO',
      'LISTEN',
      'BACKENDS',
      'BALANCE',
      'STATE',
      'ALLOW',
      'LIMITS',
      'TLS',
      'LABELS',
      'CREATED',
      'EXPIRES',
      'REASON',
    ]);
    expect(cells(lines[2])).toEqual([
      '9000',
      'tcp',
      '127.0.0.2',
      '127.0.0.1:2200, db.internal:5432*3, [::1]:80 (backup)',
      'least-conn',
      'live',
      '192.0.2.0/24,2001:db8::/32',
      'max 100, 4/client, up 512 KiB/s, down 10 MiB/s',
      '-',
      'env=prod,team=db',
      '2026-12-05T07:35:13Z',
      '2026-12-06T00:00:00Z',
      '',
    ]);
    expect(cells(lines[3]).slice(0, 8)).toEqual([
      '9001',
      'udp',
      '-',
      '127.0.0.1:2200, db.internal:5432*3, [::1]:80 (backup)',
      'least-conn',
      'failed',
      'everyone',
      '-',
    ]);
    expect(cells(lines[4])[5]).toBe('draining (3 open)');
    // The plain table keeps its columns.
    const text = await capture('ls', undefined);
    await printStreams(LISTING, text.output);
    expect(cells(text.stdout().split('\n')[1])).toEqual([
      'PORT',
      'PROTO',
      'BACKENDS',
      'STATE',
      'EXPIRES',
      'LABELS',
      'REASON',
    ]);
    // With --stats, wide shows its columns and the traffic.
    const stats = await capture('ls', 'wide');
    await printStreams(LISTING, stats.output, { stats: true });
    expect(cells(stats.stdout().split('\n')[1])).toEqual([
      'PORT',
      'PROTO',
      'LISTEN',
      'BACKENDS',
      'BALANCE',
      'STATE',
      'ALLOW',
      'LIMITS',
      'TLS',
      'LABELS',
      'CREATED',
      'EXPIRES',
      'SESSIONS',
      'FAILED',
      'LIMITED',
      'ACTIVE',
      'IN',
      'OUT',
      'LAST SESSION',
      'HEALTH',
      'REASON',
    ]);
  });
});

describe('ls --watch', () => {
  it('takes an interval from 500ms to 1h, and nothing else', () => {
    expect(parseWatchInterval('500ms')).toBe(500);
    expect(parseWatchInterval('2s')).toBe(2000);
    expect(parseWatchInterval('1h')).toBe(3_600_000);
    for (const bad of ['499ms', '61m', '2h', '0', 'soon', '', '-1s'])
      expect(() => parseWatchInterval(bad)).toThrow(expect.objectContaining({ code: ErrorCode.Usage }));
  });

  /** A client whose listings come from `answers` in turn; past the end, the watch is stopped. */
  function scripted(answers: Array<StreamView[] | ConductorError>, stopSignal: NodeJS.Signals) {
    let calls = 0;
    const client = {
      url: 'http://127.0.0.1:5000',
      close: () => undefined,
      call: async (method: string, path: string) => {
        expect([method, path]).toEqual(['GET', '/v1/streams']);
        const answer = answers[calls];
        calls += 1;
        if (calls >= answers.length) setImmediate(() => process.emit(stopSignal));
        if (answer instanceof ConductorError) throw answer;
        return { streams: answer ?? [] };
      },
    } as unknown as ApiClient;
    return { client, calls: () => calls };
  }

  const unreachable = new ConductorError(ErrorCode.DaemonUnreachable, 'daemon not reachable at x (ECONNREFUSED)');
  const one = [stream(9000)];
  const two = [stream(9000), stream(9001)];

  it('prints a listing at each change, not at each look, and says when the daemon goes and comes back', async () => {
    const run = await capture('ls', 'json');
    const { client, calls } = scripted([one, one, one, two, two, unreachable, unreachable, two, one, one], 'SIGUSR2');
    await watchStreams(
      client,
      run.output,
      { intervalMs: 1, labels: [], stats: false, url: client.url },
      {
        signals: ['SIGUSR2'],
      },
    );
    expect(calls()).toBe(10);
    expect(run.stdout().split('\n')).toEqual([JSON.stringify(one), JSON.stringify(two), JSON.stringify(one), '']);
    expect(run.stderr()).toBe(
      'conductor: daemon not reachable at x (ECONNREFUSED); still trying\nconductor: the daemon answers again\n',
    );
  });

  it('prints names with an empty line after each listing, and YAML documents', async () => {
    const names = await capture('ls', 'name');
    const first = scripted([two, [], one], 'SIGUSR2');
    await watchStreams(
      first.client,
      names.output,
      { intervalMs: 1, labels: [], stats: false, url: '' },
      {
        signals: ['SIGUSR2'],
      },
    );
    expect(names.stdout()).toBe('9000\n9001\n\n\n9000\n\n');
    const yaml = await capture('ls', 'yaml');
    const second = scripted([one, two], 'SIGUSR2');
    await watchStreams(
      second.client,
      yaml.output,
      { intervalMs: 1, labels: [], stats: false, url: '' },
      {
        signals: ['SIGUSR2'],
      },
    );
    const documents = yaml.stdout().split(/^---\n/m);
    expect(documents[0]).toBe('');
    expect(documents.slice(1).map((document) => parseYaml(document))).toEqual([
      JSON.parse(JSON.stringify(one)),
      JSON.parse(JSON.stringify(two)),
    ]);
  });

  it('ends with the refusal when the daemon refuses, and with its error at the first look', async () => {
    const run = await capture('ls', undefined);
    const refused = new ConductorError(ErrorCode.Unauthorized, 'missing or wrong token');
    const later = scripted([one, refused, one], 'SIGUSR2');
    await expect(
      watchStreams(
        later.client,
        run.output,
        { intervalMs: 1, labels: [], stats: false, url: '' },
        { signals: ['SIGUSR2'] },
      ),
    ).rejects.toBe(refused);
    expect(later.calls()).toBe(2);
    expect(run.stdout()).toMatch(/│ 9000 │/);
    const first = scripted([unreachable], 'SIGUSR2');
    await expect(
      watchStreams(
        first.client,
        run.output,
        { intervalMs: 1, labels: [], stats: false, url: '' },
        { signals: ['SIGUSR2'] },
      ),
    ).rejects.toBe(unreachable);
  });
});
