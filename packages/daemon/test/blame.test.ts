/** Blame: which streams nginx's refusal names, and what the daemon makes of that. */
import { describe, expect, it } from '@jest/globals';
import { ErrorCode, type StreamRecord, simpleSpec } from '@stream-conductor/shared';
import type { NginxLogLine } from '../src/nginx/binary.js';
import { blame, blamedAtStart, type PortLocator, portBlamed } from '../src/nginx/pipeline/blame.js';
import type { Accepted, Entry } from '../src/nginx/pipeline/types.js';

/** Our files are /srv/stream.d/_conductor_<port>.conf. */
const files: PortLocator = {
  portAt: (path) => {
    const match = /^\/srv\/stream\.d\/_conductor_([0-9]+)\.conf$/.exec(path);
    return match ? Number(match[1]) : undefined;
  },
};

const emerg = (text: string): NginxLogLine => ({ level: 'emerg', text });
const hostNotFound = (port: number): NginxLogLine =>
  emerg(`host not found in upstream "gone.invalid:80" in /srv/stream.d/_conductor_${port}.conf:5`);
const record = (port: number): StreamRecord => ({
  ...simpleSpec(port, `127.0.0.1:${port + 1000}`),
  createdAt: '2026-01-01T00:00:00.000Z',
});
const live = (port: number): Entry => ({ record: record(port), state: 'live' });
const change = (port: number, next: Entry | undefined): Accepted => ({
  item: { mutation: { kind: 'put', record: record(port) }, resolve: () => undefined, reject: () => undefined },
  port,
  next,
  change: next ? 'created' : 'removed',
});
const accepted = (port: number): Accepted => change(port, live(port));
const removal = (port: number): Accepted => change(port, undefined);

describe('portBlamed', () => {
  it.each<[string, NginxLogLine, number | undefined]>([
    ['a line of one of our files', hostNotFound(9001), 9001],
    ['a file that is not ours, and no bind', emerg('unknown directive "x" in /etc/nginx/nginx.conf:12'), undefined],
    ['a tcp bind', emerg('bind() to 0.0.0.0:9002 failed (98: Address already in use)'), 9002],
    ['a udp bind', emerg('bind() to 127.0.0.1:9003 udp failed (98: Address already in use)'), 9003],
    ['an IPv6 bind', emerg('bind() to [::1]:9004 failed (99: Cannot assign requested address)'), 9004],
    ['a bind to a port alone', emerg('bind() to 9005 failed (13: Permission denied)'), 9005],
    ['the final "still could not bind()"', emerg('still could not bind()'), undefined],
  ])('%s', (_what, line, port) => {
    expect(portBlamed(line, files)).toBe(port);
  });
});

describe('blame', () => {
  const refusal = (lines: NginxLogLine[]) => ({
    lines,
    message: lines[0]?.text ?? 'nginx said nothing',
    code: ErrorCode.NginxRejected,
  });

  it('names the created stream nginx blames, without the file path', () => {
    const result = blame(refusal([hostNotFound(9001)]), [accepted(9000), accepted(9001)], new Map(), files);
    expect(result.kind).toBe('culprits');
    if (result.kind !== 'culprits') return;
    expect([...result.culprits.keys()]).toEqual([9001]);
    expect(result.culprits.get(9001)?.code).toBe(ErrorCode.NginxRejected);
    expect(result.culprits.get(9001)?.message).toBe(
      'nginx refused the stream on port 9001: host not found in upstream "gone.invalid:80"',
    );
    expect(result.bystanders.size).toBe(0);
  });

  it('answers a port another process took with PORT_IN_USE', () => {
    const result = blame(
      refusal([emerg('bind() to 0.0.0.0:9002 failed (98: Address already in use)')]),
      [accepted(9002)],
      new Map(),
      files,
    );
    expect(result.kind === 'culprits' && result.culprits.get(9002)?.code).toBe(ErrorCode.PortInUse);
  });

  it('names a live stream outside the change as a bystander, and a removed one as nothing', () => {
    const entries = new Map([
      [9005, live(9005)],
      [9006, live(9006)],
    ]);
    const result = blame(refusal([hostNotFound(9005), hostNotFound(9006)]), [removal(9006)], entries, files);
    expect(result.kind).toBe('culprits');
    if (result.kind !== 'culprits') return;
    expect(result.culprits.size).toBe(0);
    expect([...result.bystanders]).toEqual([[9005, 'nginx: host not found in upstream "gone.invalid:80"']]);
  });

  it('does not make a bystander of a warning, nor of a stream already set aside', () => {
    const entries = new Map<number, Entry>([
      [9007, { record: record(9007), state: 'failed', reason: 'x' }],
      [9008, live(9008)],
    ]);
    const warn: NginxLogLine = {
      level: 'warn',
      text: 'something about /srv/stream.d/_conductor_9008.conf:5 in /srv/stream.d/_conductor_9008.conf:5',
    };
    const result = blame(refusal([hostNotFound(9007), warn]), [accepted(9000)], entries, files);
    expect(result).toMatchObject({ kind: 'all' });
  });

  it('refuses the whole change with the message when nginx names no stream', () => {
    const unavailable = blame(
      { lines: [], message: 'nginx is not running', code: ErrorCode.NginxUnavailable },
      [accepted(9000)],
      new Map(),
      files,
    );
    expect(unavailable.kind === 'all' && unavailable.error.message).toBe(
      'nginx is not available: nginx is not running',
    );
    const rejected = blame(
      refusal([emerg('unknown directive "x" in /etc/nginx/nginx.conf:12')]),
      [accepted(9000)],
      new Map(),
      files,
    );
    expect(rejected.kind === 'all' && rejected.error.message).toBe('nginx refused the change: unknown directive "x"');
  });
});

describe('blamedAtStart', () => {
  it('names each live stream once, with the first reason', () => {
    const entries = new Map<number, Entry>([
      [9001, live(9001)],
      [9002, { record: record(9002), state: 'failed' }],
    ]);
    const blamed = blamedAtStart(
      [hostNotFound(9001), emerg('bind() to 0.0.0.0:9001 failed (98: Address already in use)'), hostNotFound(9002)],
      entries,
      files,
    );
    expect([...blamed]).toEqual([[9001, 'host not found in upstream "gone.invalid:80"']]);
  });
});
