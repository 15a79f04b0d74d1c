import { readFile } from 'node:fs/promises';

/** The hard limit on open files of this process, or undefined when unlimited or unknown. */
export async function hardOpenFileLimit(): Promise<number | undefined> {
  try {
    const text = await readFile('/proc/self/limits', 'utf8');
    const hard = /^Max open files\s+\S+\s+(\S+)/m.exec(text)?.[1];
    return hard === undefined || hard === 'unlimited' ? undefined : Number(hard);
  } catch {
    return undefined;
  }
}
