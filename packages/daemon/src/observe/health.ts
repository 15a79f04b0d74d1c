/**
 * Backend health: a TCP connect to every backend of every live TCP stream, on a period and on
 * demand, with the time the connect took. A backend that refuses, times out or does not resolve
 * is down. UDP backends cannot be probed this way and stay unknown.
 */
import { connect } from 'node:net';
import { type BackendHealth, parseBackend } from '@stream-conductor/shared';

export interface ProbeTarget {
  port: number;
  protocol: 'tcp' | 'udp' | 'tcp+udp';
  backends: string[];
}

/** Connects to `address` (host:port) and resolves with the milliseconds it took, or rejects. */
export function probe(address: string, timeoutMs: number): Promise<number> {
  const backend = parseBackend(address);
  const host = backend.kind === 'ipv6' ? backend.host.slice(1, -1) : backend.host;
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const socket = connect({ host, port: backend.port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(Number(process.hrtime.bigint() - started) / 1e6);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new Error(error.code ?? error.message));
    });
  });
}

export class HealthChecker {
  /** By backend address: several streams may share a backend, which is probed once a round. */
  private readonly byBackend = new Map<string, BackendHealth>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  /** Rounds on demand for one stream, by port and backends: a second ask while one runs waits for it. */
  private readonly runningFor = new Map<string, Promise<void>>();

  constructor(
    private readonly targets: () => ProbeTarget[],
    private readonly options: { intervalMs: number; timeoutMs: number; concurrency?: number },
  ) {}

  start(): void {
    if (this.options.intervalMs <= 0) return;
    this.timer = setInterval(() => void this.check(), this.options.intervalMs);
    this.timer.unref();
    void this.check();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** Probes now (the backends of `port`, or all); resolves when the round is done. */
  async check(port?: number): Promise<void> {
    if (port === undefined && this.running) return this.running;
    const addresses = new Set<string>();
    for (const target of this.targets()) {
      if (port !== undefined && target.port !== port) continue;
      if (target.protocol === 'udp') continue;
      for (const backend of target.backends) addresses.add(backend);
    }
    const key = port === undefined ? '' : `${port} ${[...addresses].join(',')}`;
    const same = port === undefined ? undefined : this.runningFor.get(key);
    if (same) return same;
    const queue = [...addresses];
    const round = (async () => {
      const workers = Array.from({ length: Math.min(this.options.concurrency ?? 16, queue.length) }, async () => {
        for (let address = queue.shift(); address !== undefined; address = queue.shift())
          await this.probeOne(address, this.options.timeoutMs);
      });
      await Promise.all(workers);
      // Backends no stream names any more (now, at the end of the round) are forgotten.
      if (port === undefined) {
        const named = new Set(this.targets().flatMap((target) => target.backends));
        for (const address of this.byBackend.keys()) if (!named.has(address)) this.byBackend.delete(address);
      }
    })();
    if (port === undefined) {
      this.running = round.finally(() => {
        this.running = undefined;
      });
      return this.running;
    }
    const mine = round.finally(() => this.runningFor.delete(key));
    this.runningFor.set(key, mine);
    return mine;
  }

  /** How many backends have a known health (for tests: it holds current backends only). */
  get known(): number {
    return this.byBackend.size;
  }

  /** Probes one backend and records what it found. */
  async probeOne(address: string, timeoutMs: number): Promise<BackendHealth> {
    const checkedAt = new Date().toISOString();
    let health: BackendHealth;
    try {
      const latency = await probe(address, timeoutMs);
      health = { state: 'up', latencyMs: Math.round(latency * 100) / 100, checkedAt };
    } catch (error) {
      health = { state: 'down', checkedAt, error: (error as Error).message };
    }
    this.byBackend.set(address, health);
    return health;
  }

  /** The last known health of each backend of a stream. */
  of(target: ProbeTarget): Array<BackendHealth & { backend: string }> {
    return target.backends.map((backend) =>
      target.protocol === 'udp'
        ? { backend, state: 'unknown' }
        : { backend, ...(this.byBackend.get(backend) ?? { state: 'unknown' }) },
    );
  }
}
