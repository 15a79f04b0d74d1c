import { describe, expect, it } from '@jest/globals';
import type { NginxLogLine } from '../src/nginx/binary.js';
import { parseNginxLines } from '../src/nginx/binary.js';
import { reloadVerdict } from '../src/nginx/process/controller.js';

const bind = (port: number): NginxLogLine => ({
  level: 'emerg',
  text: `bind() to 0.0.0.0:${port} failed (98: Address already in use)`,
});
const retry: NginxLogLine = { level: 'notice', text: 'try again to bind() after 500ms' };
const stillCouldNot: NginxLogLine = { level: 'emerg', text: 'still could not bind()' };
const hostNotFound: NginxLogLine = {
  level: 'emerg',
  text: 'host not found in upstream "gone.invalid:80" in /x/stream.d/_conductor_9001.conf:5',
};

describe('reloadVerdict', () => {
  it.each<[string, NginxLogLine[], NginxLogLine | undefined]>([
    ['nothing logged', [], undefined],
    ['notices only', [{ level: 'notice', text: 'signal process started' }, retry], undefined],
    [
      'warn and notice only',
      [
        { level: 'warn', text: 'conflicting server name' },
        { level: 'notice', text: 'reconfiguring' },
      ],
      undefined,
    ],
    [
      'error, crit, info only',
      [
        { level: 'error', text: 'connect() failed' },
        { level: 'crit', text: 'pwrite() failed' },
        { level: 'info', text: 'x' },
      ],
      undefined,
    ],
    ['bind retries still under way', [bind(9000), retry, bind(9000), retry, bind(9000), retry], undefined],
    [
      'bind retries then the final "still could not bind()"',
      [bind(9000), retry, bind(9000), retry, bind(9000), retry, stillCouldNot],
      bind(9000),
    ],
    [
      'two ports failing: the first bind line',
      [bind(9003), bind(9004), retry, bind(9003), bind(9004), retry, stillCouldNot],
      bind(9003),
    ],
    ['"still could not bind()" alone', [stillCouldNot], stillCouldNot],
    ['a non-bind emergency', [{ level: 'notice', text: 'signal process started' }, hostNotFound], hostNotFound],
    ['a non-bind emergency after bind retries', [bind(9000), retry, hostNotFound], hostNotFound],
    ['the first of two non-bind emergencies', [hostNotFound, { level: 'emerg', text: 'second' }], hostNotFound],
    [
      'an alert',
      [{ level: 'alert', text: 'could not allocate new session' }],
      { level: 'alert', text: 'could not allocate new session' },
    ],
    [
      'a bind failure logged as alert counts as a retry',
      [{ level: 'alert', text: 'bind() to 0.0.0.0:9000 failed (98)' }],
      undefined,
    ],
  ])('%s', (_what, lines, expected) => {
    expect(reloadVerdict(lines)).toEqual(expected);
  });

  it('reads a real error log of a reload nginx gave up on', () => {
    const log = [
      '2026/11/25 20:43:30 [notice] 2706#2706: signal process started',
      '2026/11/25 20:43:30 [emerg] 2706#2706: bind() to 0.0.0.0:9000 failed (98: Address already in use)',
      '2026/11/25 20:43:30 [notice] 2706#2706: try again to bind() after 500ms',
      '2026/11/25 20:43:30 [emerg] 2706#2706: bind() to 0.0.0.0:9000 failed (98: Address already in use)',
      '2026/11/25 20:43:31 [notice] 2706#2706: try again to bind() after 500ms',
      '2026/11/25 20:43:31 [emerg] 2706#2706: bind() to 0.0.0.0:9000 failed (98: Address already in use)',
      '2026/11/25 20:43:31 [notice] 2706#2706: try again to bind() after 500ms',
      '2026/11/25 20:43:32 [emerg] 2706#2706: bind() to 0.0.0.0:9000 failed (98: Address already in use)',
      '2026/11/25 20:43:32 [notice] 2706#2706: try again to bind() after 500ms',
      '2026/11/25 20:43:32 [emerg] 2706#2706: bind() to 0.0.0.0:9000 failed (98: Address already in use)',
      '2026/11/25 20:43:32 [notice] 2706#2706: try again to bind() after 500ms',
      '2026/11/25 20:43:33 [emerg] 2706#2706: still could not bind()',
      '',
    ].join('\n');
    const lines = parseNginxLines(log);
    expect(reloadVerdict(lines.slice(0, 5))).toBeUndefined();
    expect(reloadVerdict(lines)).toEqual({
      level: 'emerg',
      text: 'bind() to 0.0.0.0:9000 failed (98: Address already in use)',
    });
  });

  it('reads a real error log of a reload refused for an unresolvable name', () => {
    const log = [
      '2026/11/25 20:50:01 [notice] 3001#3001: signal process started',
      '2026/11/25 20:50:01 [emerg] 2990#2990: host not found in upstream "gone.invalid:80" in /x/stream.d/_conductor_9001.conf:5',
      '',
    ].join('\n');
    expect(reloadVerdict(parseNginxLines(log))).toEqual({
      level: 'emerg',
      text: 'host not found in upstream "gone.invalid:80" in /x/stream.d/_conductor_9001.conf:5',
    });
  });
});
