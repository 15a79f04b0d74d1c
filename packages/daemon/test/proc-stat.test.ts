/** The one /proc/<pid>/stat parser: command names with spaces and parentheses, and a real read. */
import { describe, expect, it } from '@jest/globals';
import { parseProcStat, procStat, procStatAsync } from '../src/sys/proc-stat.js';

/** A stat line with `comm`, state S, parent 77 and start time 4242 (field 22). */
const line = (comm: string, state = 'S'): string =>
  `1234 (${comm}) ${state} 77 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 4242 1000000 200 18446744073709551615\n`;

describe('parseProcStat', () => {
  it.each([
    ['a plain name', 'nginx'],
    ['spaces', 'nginx: worker process'],
    ['a closing parenthesis inside', 'evil) R 1 2'],
    ['nested parentheses', '(sd-pam)'],
    ['an empty name', ''],
    ['only parentheses', ')('],
  ])('reads the fields after a command name with %s', (_what, comm) => {
    expect(parseProcStat(line(comm))).toEqual({ pid: 1234, comm, state: 'S', ppid: 77, startTicks: 4242 });
  });

  it('reads a zombie and a stopped process', () => {
    expect(parseProcStat(line('nginx', 'Z'))?.state).toBe('Z');
    expect(parseProcStat(line('a) T 1 (b', 't'))?.state).toBe('t');
  });

  it.each([
    ['empty text', ''],
    ['no parentheses', '1234 nginx S 77'],
    ['nothing after the name', '1234 (nginx)'],
    ['a state of more than one letter', '1234 (nginx) SS 77'],
  ])('refuses %s', (_what, text) => {
    expect(parseProcStat(text)).toBeUndefined();
  });
});

describe('procStat', () => {
  it('reads this process', async () => {
    const own = procStat(process.pid);
    expect(own).toMatchObject({ pid: process.pid, ppid: process.ppid });
    expect(own?.startTicks).toBeGreaterThan(0);
    expect((await procStatAsync(process.pid))?.ppid).toBe(process.ppid);
  });

  it('says nothing of a process that does not exist', async () => {
    expect(procStat(2 ** 22 + 1)).toBeUndefined();
    expect(await procStatAsync(2 ** 22 + 1)).toBeUndefined();
  });
});
