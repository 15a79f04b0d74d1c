/**
 * Calls on one port that run one after another (each reads what the one before it left), while
 * calls on other ports go on at the same time.
 */
export class PortTurns {
  /** The last call queued on each port, settled either way. */
  private readonly last = new Map<number, Promise<void>>();

  /** Runs `work` once the calls queued on `port` before it have ended. */
  async run<T>(port: number, work: () => Promise<T>): Promise<T> {
    const before = this.last.get(port) ?? Promise.resolve();
    const mine = before.then(work, work);
    const settled = mine.then(
      () => undefined,
      () => undefined,
    );
    this.last.set(port, settled);
    try {
      return await mine;
    } finally {
      if (this.last.get(port) === settled) this.last.delete(port);
    }
  }
}
