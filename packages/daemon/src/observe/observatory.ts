/**
 * Everything the daemon watches: traffic from nginx's access logs, failed TLS handshakes with
 * backends from its error logs, open connections from the kernel, backend health from TCP probes,
 * the audit log of changes, and the metrics built on them.
 */
import type { AuditEvent, NginxStatus, StreamSpec, StreamView, TrafficStats } from '@stream-conductor/shared';
import { protocolsOf, routeId } from '@stream-conductor/shared';
import { type Logger, settled } from '../log.js';
import { AuditLog } from './audit.js';
import { BackendTlsWatch, parseBackendTlsLine } from './backend-tls.js';
import { type OpenTraffic, openConnections } from './connections.js';
import { HealthChecker, type ProbeTarget } from './health.js';
import { LogTail } from './log-tail.js';
import { Metrics } from './metrics.js';
import { sumFinished, sumOpen, trafficPorts } from './range-stats.js';
import { type LogWriter, releaseLog, writtenBy } from './release.js';
import { parseAccessLine, TrafficCounter } from './traffic.js';

export interface ObservatoryOptions {
  /** One access log per nginx instance, and the nginx that writes it. */
  accessLogs: Array<{ path: string; writer: LogWriter }>;
  accessLogMaxBytes: number;
  /**
   * The error log of each nginx master, read for failed TLS handshakes with backends; bounded by
   * whoever owns it (a managed master's supervisor trims it, an external nginx's operator).
   */
  errorLogs: string[];
  auditPath: string;
  auditMaxBytes: number;
  healthIntervalMs: number;
  healthTimeoutMs: number;
  log: Logger;
  /** The open connections of some ports, from the kernel (`ss`); replaced in unit tests. */
  readSockets?: (ports: Set<number>) => Promise<Map<number, OpenTraffic>>;
}

/** Finished sessions and open connections, read together (see Observatory.snapshot). */
interface Snapshot {
  finished: Map<number, TrafficStats>;
  open: Map<number, OpenTraffic>;
}

/** What the observatory needs to know of the daemon's streams and nginx. */
export interface ObservedDaemon {
  list(): StreamView[];
  nginx(): Array<NginxStatus & { id: number }>;
}

export class Observatory {
  readonly traffic = new TrafficCounter();
  readonly backendTls = new BackendTlsWatch();
  readonly audit: AuditLog;
  readonly health: HealthChecker;
  readonly metrics: Metrics;
  private readonly tails: LogTail[];
  private timer: NodeJS.Timeout | undefined;
  private daemon: ObservedDaemon | undefined;
  /** The byte totals last shown per port, for the stream created at `createdAt`. */
  private readonly shown = new Map<number, { createdAt: string; bytesIn: number; bytesOut: number }>();
  /** The read of the socket table under way (the next one starts when it ends). */
  private reading: Promise<unknown> = Promise.resolve();
  /** The read that waits for it, which every ask that comes meanwhile joins with its ports. */
  private waiting: { ports: Set<number>; tcp: Set<number>; result: Promise<Snapshot> } | undefined;

  constructor(private readonly options: ObservatoryOptions) {
    this.audit = new AuditLog(options.auditPath, { maxBytes: options.auditMaxBytes, keep: 1000, log: options.log });
    const accessTails = options.accessLogs.map(
      ({ path, writer }) =>
        new LogTail({
          path,
          onLine: (text) => {
            const line = parseAccessLine(text);
            if (!line) return;
            this.traffic.add(line);
            this.backendTls.sessionEnded(line);
          },
          rotation: {
            maxBytes: options.accessLogMaxBytes,
            release: async (rotated) => {
              const how = await releaseLog(writer, rotated, options.log);
              options.log.info('rotated an access log', { path, how });
            },
            stillWritten: (rotated) => writtenBy(writer.master(), rotated),
          },
          log: options.log,
        }),
    );
    const errorTails = options.errorLogs.map(
      (path) =>
        new LogTail({
          path,
          onLine: (text) => {
            const failure = parseBackendTlsLine(text);
            if (failure) this.backendTls.failed(failure);
          },
          log: options.log,
        }),
    );
    this.tails = [...accessTails, ...errorTails];
    this.health = new HealthChecker(() => this.targets(), {
      intervalMs: options.healthIntervalMs,
      timeoutMs: options.healthTimeoutMs,
    });
    this.metrics = new Metrics({
      streams: () => this.withStats(this.daemon?.list() ?? []),
      nginx: () => this.daemon?.nginx() ?? [],
    });
  }

  private targets(): ProbeTarget[] {
    return (this.daemon?.list() ?? [])
      .filter((stream) => stream.state === 'live')
      .map((stream) => ({
        port: stream.port,
        protocol: stream.protocol,
        backends: stream.backends.map((backend) => backend.address),
      }));
  }

  /** Starts reading the access logs and probing backends. */
  start(daemon: ObservedDaemon): void {
    this.daemon = daemon;
    void this.poll();
    this.timer = setInterval(() => void this.poll(), 250);
    this.timer.unref();
    this.health.start();
  }

  /** Reads what the access and error logs gained since the last look. */
  async poll(): Promise<void> {
    await Promise.all(
      this.tails.map((tail) =>
        tail.poll().catch((error: unknown) => this.options.log.warn('could not read an nginx log', { error })),
      ),
    );
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.health.stop();
  }

  /**
   * The streams with their traffic, open connections and backend health. Bytes count finished
   * sessions (from the access log) and the open ones so far (from the kernel), so that a long
   * session shows while it runs.
   */
  async withStats(streams: StreamView[]): Promise<StreamView[]> {
    const { finished: done, open } = await this.snapshot(
      trafficPorts(streams),
      trafficPorts(streams.filter((stream) => protocolsOf(stream).includes('tcp'))),
    );
    return streams.map((stream) => {
      // Always there: asked for. A range's is the sum over its ports.
      const finished = sumFinished(stream, (port) => done.get(port) ?? this.traffic.get(port));
      const now = sumOpen(stream, open);
      // Between a session's end and the look that reads its log line, its bytes are in neither
      // source: the totals hold at their last value instead of dipping (they are counters).
      const before = this.shown.get(stream.port);
      const same = before?.createdAt === stream.createdAt;
      const bytesIn = Math.max(finished.bytesIn + (now?.bytesIn ?? 0), same ? before.bytesIn : 0);
      const bytesOut = Math.max(finished.bytesOut + (now?.bytesOut ?? 0), same ? before.bytesOut : 0);
      this.shown.set(stream.port, { createdAt: stream.createdAt, bytesIn, bytesOut });
      return {
        ...stream,
        stats: {
          ...finished,
          bytesIn,
          bytesOut,
          activeConnections: now?.active ?? 0,
          backends: this.health.of({
            port: stream.port,
            protocol: stream.protocol,
            backends: stream.backends.map((backend) => backend.address),
          }),
          ...(stream.routes === undefined
            ? {}
            : { routes: stream.routes.map((route) => this.traffic.route(stream.port, routeId(route))) }),
        },
      };
    });
  }

  /**
   * The finished sessions and the open connections of `ports`. One `ss` runs at a time, and the
   * asks that come while it runs share the one after it, however many scrapes and lists come at
   * once. The finished sessions are taken just before the kernel is asked: a session that ends in
   * between is then in neither source this once (the totals hold, see withStats), where the other
   * order would count it twice.
   */
  private snapshot(ports: number[], tcp: number[]): Promise<Snapshot> {
    if (this.waiting) {
      for (const port of ports) this.waiting.ports.add(port);
      for (const port of tcp) this.waiting.tcp.add(port);
      return this.waiting.result;
    }
    const read = this.options.readSockets ?? openConnections;
    const waiting = {
      ports: new Set(ports),
      tcp: new Set(tcp),
      result: Promise.resolve<Snapshot>({ finished: new Map(), open: new Map() }),
    };
    waiting.result = this.reading.then(async () => {
      if (this.waiting === waiting) this.waiting = undefined;
      const finished = new Map([...waiting.ports].map((port) => [port, this.traffic.get(port)]));
      const open = waiting.tcp.size === 0 ? new Map<number, OpenTraffic>() : await read(waiting.tcp);
      return { finished, open };
    });
    this.waiting = waiting;
    this.reading = settled(waiting.result);
    return waiting.result;
  }

  /**
   * Runs a create or replace of `spec` and, meanwhile, connects once to each of its TCP backends:
   * a backend that does not accept connections does not stop the change (it may come up later),
   * but the answer says so. Waits at most a second for a backend beyond the change itself.
   */
  async withBackendCheck<T extends { warnings: string[] }>(spec: StreamSpec, change: () => Promise<T>): Promise<T> {
    const backends = protocolsOf(spec).includes('tcp')
      ? [...new Set(spec.backends.map((backend) => backend.address))]
      : [];
    const checks = Promise.all(
      backends.map(async (address) => ({
        address,
        health: await this.health.probeOne(address, Math.min(this.options.healthTimeoutMs, 1000)),
      })),
    );
    const result = await change();
    const down = (await checks).filter(({ health }) => health.state === 'down');
    const warnings = down.map(
      ({ address, health }) =>
        `backend ${address} does not accept connections now (${health.error ?? 'down'}): the stream forwards to it once it does`,
    );
    return warnings.length === 0 ? result : { ...result, warnings: [...result.warnings, ...warnings] };
  }

  record(event: Omit<AuditEvent, 'at'>): void {
    this.audit.record({ at: new Date().toISOString(), ...event });
  }
}

/** A create or replace with the observatory's backend check, or as it is without an observatory. */
export function withBackendCheck<T extends { warnings: string[] }>(
  observatory: Observatory | undefined,
  spec: StreamSpec,
  change: () => Promise<T>,
): Promise<T> {
  return observatory ? observatory.withBackendCheck(spec, change) : change();
}
