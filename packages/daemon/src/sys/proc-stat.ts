/**
 * The one reader of /proc/<pid>/stat. The command name (field 2) sits in parentheses and may
 * itself hold spaces and parentheses ("(nginx) (x)"), so the fields after it are found from the
 * last ")" of the line, never by splitting the whole line.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

/** The fields of /proc/<pid>/stat the daemon reads. */
export interface ProcStat {
  pid: number;
  /** The command name as the kernel keeps it (at most 15 bytes), without its parentheses. */
  comm: string;
  /** One letter: R, S, D, T, t, Z... */
  state: string;
  ppid: number;
  /** When the process started, in clock ticks after boot (field 22). */
  startTicks: number;
}

/** Parses the text of /proc/<pid>/stat; undefined when it is not one. */
export function parseProcStat(text: string): ProcStat | undefined {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return undefined;
  // After ") ": state is field 3, ppid field 4, starttime field 22.
  const fields = text.slice(close + 2).split(' ');
  const state = fields[0] ?? '';
  if (state.length !== 1) return undefined;
  return {
    pid: Number(text.slice(0, open).trim()),
    comm: text.slice(open + 1, close),
    state,
    ppid: Number(fields[1]),
    startTicks: Number(fields[19]),
  };
}

/**
 * /proc/<pid>/stat of a process, read synchronously (it is polled every few milliseconds while a
 * reload runs, and a read of /proc is cheap); undefined when the process is gone or /proc cannot
 * be read.
 */
export function procStat(pid: number | string): ProcStat | undefined {
  try {
    return parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}

/** procStat, read without blocking (scans of every process). */
export async function procStatAsync(pid: number | string): Promise<ProcStat | undefined> {
  try {
    return parseProcStat(await readFile(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}
