/** Waiting for something that happens by itself (a restart, a retry), with a deadline. */
export const sleep = (ms: number): Promise<void> => new Promise((done) => setTimeout(done, ms));

/** Polls `probe` until `accept` holds; throws with the last value or error when time runs out. */
export async function eventually<T>(
  probe: () => Promise<T>,
  accept: (value: T) => boolean,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      last = await probe();
      if (accept(last)) return last;
    } catch (error) {
      lastError = error;
    }
    await sleep(50);
  }
  throw new Error(
    `condition not met in ${timeoutMs} ms; last value ${JSON.stringify(last)} ${String(lastError ?? '')}`,
  );
}

/** Whether a process runs (a zombie waiting for its parent to reap it does not). */
export async function alive(pid: number): Promise<boolean> {
  const { readFile } = await import('node:fs/promises');
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}
