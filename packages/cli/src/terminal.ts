/**
 * The terminal of the live views (`top`, `ls --watch`): the alternate screen, a hidden cursor and
 * keys read one by one while a view runs, and the terminal given back as it was afterwards.
 */

const ENTER_ALTERNATE = '\x1b[?1049h\x1b[?25l';
const LEAVE_ALTERNATE = '\x1b[?25h\x1b[?1049l';
/** Cursor to the top left, screen cleared: what each redraw starts with. */
export const HOME_AND_CLEAR = '\x1b[H\x1b[2J';

/** q, Ctrl-C (raw mode delivers it as a key, not a signal) and Esc quit a live view. */
export function isQuitKey(key: string): boolean {
  return key === 'q' || key === 'Q' || key === '\x03' || key === '\x1b';
}

/**
 * Takes the terminal for a live view: the alternate screen (what was on the screen comes back
 * on exit), the cursor hidden, keys passed to `onKey` one press at a time when stdin is a terminal,
 * `onResize` on a window change. Answers the function that gives it all back; call it once.
 */
export function takeTerminal(
  stdin: NodeJS.ReadStream,
  stdout: NodeJS.WriteStream,
  onKey: (key: string) => void,
  onResize: () => void,
): () => void {
  const keys = (data: Buffer): void => onKey(data.toString('utf8'));
  const raw = stdin.isTTY === true;
  stdout.write(ENTER_ALTERNATE);
  stdout.on('resize', onResize);
  if (raw) {
    stdin.setRawMode(true);
    stdin.on('data', keys);
    stdin.resume();
  }
  let given = false;
  return () => {
    if (given) return;
    given = true;
    if (raw) {
      stdin.off('data', keys);
      stdin.setRawMode(false);
      stdin.pause();
    }
    stdout.off('resize', onResize);
    stdout.write(LEAVE_ALTERNATE);
  };
}

/**
 * How a live view stops: `stop()` (q, Ctrl-C or a signal) settles `quitting` at once, so a pause
 * or a request in flight raced against it is not waited for.
 */
export class StopSwitch {
  stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private quit: () => void = () => undefined;
  readonly quitting = new Promise<'quit'>((resolve) => {
    this.quit = () => resolve('quit');
  });

  readonly stop = (): void => {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.quit();
  };

  /** Waits `ms`, or until stopped. */
  pause(ms: number): Promise<unknown> {
    return Promise.race([
      new Promise((resolve) => {
        this.timer = setTimeout(resolve, ms);
      }),
      this.quitting,
    ]);
  }
}

/** The first `rows` lines of `text`, the last of them saying how many were left out. */
export function fitRows(text: string, rows: number | undefined, more: (hidden: number) => string): string {
  const lines = text.split('\n');
  if (rows === undefined || rows <= 0 || lines.length <= rows) return text;
  const kept = Math.max(1, rows - 1);
  return [...lines.slice(0, kept), more(lines.length - kept)].join('\n');
}
