/**
 * The daemon's one entry point for what the API does: it validates requests, routes each port to
 * the nginx instance that owns it, and answers lists and status. At start-up it loads the store,
 * takes over old-format files, and has every instance bring nginx in line.
 */
import {
  ConductorError,
  type CreateResult,
  type DaemonStatus,
  ErrorCode,
  type PortRange,
  type StreamRecord,
  type StreamView,
  type NginxMode,
  assertPortInRange,
  formatPortRange,
  isPortInRange,
  parseBackend,
  parsePort,
} from '@stream-conductor/shared';
import type { Logger } from './log.js';
import type { Entry, NginxInstance } from './nginx/instance.js';
import type { StreamStore } from './streams/store.js';
import type { PortProbe } from './sys/ports.js';

export interface ConductorOptions {
  version: string;
  mode: NginxMode;
  portRange: PortRange;
  store: StreamStore;
  instances: NginxInstance[];
  probePort(port: number): Promise<PortProbe>;
  log: Logger;
  now?: () => Date;
}

function view(entry: Entry): StreamView {
  const stream: StreamView = { ...entry.record, state: entry.state };
  if (entry.reason !== undefined) stream.reason = entry.reason;
  return stream;
}

export class Conductor {
  /** Stored definitions no instance serves (outside PORT_RANGE since a configuration change). */
  private readonly parked = new Map<number, Entry>();
  private readonly problems: string[] = [];
  private readonly startedAt = new Date().toISOString();
  private readonly now: () => Date;

  constructor(private readonly options: ConductorOptions) {
    if (options.instances.length === 0) throw new Error('a conductor needs at least one nginx instance');
    this.now = options.now ?? (() => new Date());
  }

  /** The instance that owns `port`: neighbouring ports go to different instances. */
  instanceFor(port: number): NginxInstance {
    const { instances, portRange } = this.options;
    return instances[(port - portRange.start) % instances.length] as NginxInstance;
  }

  /** Loads the store, adopts old-format files, and brings every nginx instance in line. */
  async start(): Promise<void> {
    const { store, instances, portRange, log } = this.options;
    const loaded = await store.load();
    this.problems.push(...loaded.problems);
    const records = new Map(loaded.records.map((record) => [record.port, record]));
    const adopted: StreamRecord[] = [];
    const scanned = new Set<string>();
    for (const instance of instances) {
      const files = instance.files;
      if (scanned.has(files.folder)) continue;
      scanned.add(files.folder);
      for (const { name, parsed } of (await files.scan()).legacy) {
        let problem: string | undefined;
        if ('error' in parsed) problem = parsed.error;
        else if (!isPortInRange(parsed.port, portRange)) problem = `port ${parsed.port} is outside PORT_RANGE ${formatPortRange(portRange)}`;
        else if (records.has(parsed.port)) problem = `port ${parsed.port} already has a stream in the store`;
        if (problem === undefined && !('error' in parsed)) {
          const record: StreamRecord = { port: parsed.port, backend: parsed.backend, createdAt: this.now().toISOString() };
          records.set(record.port, record);
          adopted.push(record);
          await files.retireLegacy(name, 'adopted');
          log.info('adopted an old-format stream file', { file: name, port: record.port, backend: record.backend });
        } else {
          await files.retireLegacy(name, 'rejected');
          const message = `old-format file ${name} was not adopted (kept as ${name}.rejected): ${problem}`;
          this.problems.push(message);
          log.warn('old-format stream file not adopted', { file: name, reason: problem });
        }
      }
    }
    if (adopted.length > 0) await store.commit({ put: adopted, remove: [] });
    const byInstance = new Map<NginxInstance, StreamRecord[]>();
    for (const record of records.values()) {
      if (!isPortInRange(record.port, portRange)) {
        const reason = `port ${record.port} is outside PORT_RANGE ${formatPortRange(portRange)}`;
        this.parked.set(record.port, { record, state: 'failed', reason });
        this.problems.push(`stream on port ${record.port} is not served: ${reason}`);
        continue;
      }
      const instance = this.instanceFor(record.port);
      byInstance.set(instance, [...(byInstance.get(instance) ?? []), record]);
    }
    for (const instance of instances) instance.load(byInstance.get(instance) ?? []);
    await Promise.all(instances.map((instance) => instance.start()));
  }

  private entry(port: number): Entry | undefined {
    return this.parked.get(port) ?? (isPortInRange(port, this.options.portRange) ? this.instanceFor(port).get(port) : undefined);
  }

  list(): StreamView[] {
    const entries = [...this.parked.values(), ...this.options.instances.flatMap((instance) => instance.list())];
    return entries.map(view).sort((a, b) => a.port - b.port);
  }

  get(port: number): StreamView | undefined {
    const entry = this.entry(port);
    return entry ? view(entry) : undefined;
  }

  /** Creates a stream; resolves once it is live. `portText` and `backendText` are raw input. */
  async create(portText: string | number, backendText: string): Promise<CreateResult> {
    const port = parsePort(portText);
    assertPortInRange(port, this.options.portRange);
    const backend = parseBackend(backendText).address;
    const parked = this.parked.get(port);
    if (parked) throw new ConductorError(ErrorCode.StreamExists, `port ${port} already has a stream (to ${parked.record.backend})`);
    const record: StreamRecord = { port, backend, createdAt: this.now().toISOString() };
    const instance = this.instanceFor(port);
    const { warnings } = await instance.submit({ kind: 'create', record });
    const entry = instance.get(port);
    return { stream: entry ? view(entry) : { ...record, state: 'live' }, warnings };
  }

  /** Removes a stream; resolves once its port refuses new connections. */
  async remove(portText: string | number): Promise<{ warnings: string[] }> {
    const port = parsePort(portText);
    const parked = this.parked.get(port);
    if (parked) {
      await this.options.store.commit({ put: [], remove: [port] });
      this.parked.delete(port);
      return { warnings: [] };
    }
    if (!isPortInRange(port, this.options.portRange)) {
      throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
    }
    return this.instanceFor(port).submit({ kind: 'remove', port });
  }

  /**
   * The first port of the range without a stream that no other process holds either. It is not
   * reserved: two callers may be told the same port, and the second create is refused.
   */
  async freePort(): Promise<number | undefined> {
    const { start, end } = this.options.portRange;
    for (let port = start; port <= end; port += 1) {
      if (this.entry(port) !== undefined) continue;
      if ((await this.options.probePort(port)) === 'free') return port;
    }
    return undefined;
  }

  status(): DaemonStatus {
    const streams = this.list();
    const failed = streams.filter((stream) => stream.state === 'failed');
    const first = this.options.instances[0] as NginxInstance;
    return {
      version: this.options.version,
      mode: this.options.mode,
      portRange: { ...this.options.portRange },
      streams: { total: streams.length, live: streams.length - failed.length, failed: failed.length },
      nginx: first.controller.status(),
      failed: failed.map((stream) => ({ port: stream.port, backend: stream.backend, reason: stream.reason ?? 'unknown' })),
      problems: [...this.problems],
      startedAt: this.startedAt,
    };
  }

  async close(): Promise<void> {
    await Promise.all(this.options.instances.map((instance) => instance.close()));
  }
}
