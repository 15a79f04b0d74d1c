/**
 * GET /metrics in the Prometheus exposition format (prom-client): per-stream traffic, active
 * connections and backend health, read at scrape time; apply and reload counts and durations as
 * they happen; nginx's state, restarts and draining old workers; and the process's own figures.
 */

import type { NginxStatus, RouteStats, StreamView } from '@stream-conductor/shared';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

export interface MetricsSource {
  /** The streams with their stats. */
  streams(): Promise<StreamView[]>;
  nginx(): Array<NginxStatus & { id: number }>;
}

/** What the apply pipeline reports as it works (see NginxInstance). */
export interface PipelineObserver {
  apply(instance: number, seconds: number, applied: number, refused: number): void;
  reload(instance: number, ok: boolean, seconds: number): void;
  /** Something the daemon did by itself that an operator should find in the audit log. */
  finding?(instance: number, action: 'set-aside' | 'audit', ports: number[], detail: string): void;
}

export class Metrics implements PipelineObserver {
  readonly registry = new Registry();
  private readonly applies: Counter<'instance' | 'result'>;
  private readonly applyDuration: Histogram<'instance'>;
  private readonly reloads: Counter<'instance' | 'result'>;
  private readonly reloadDuration: Histogram<'instance'>;

  private readonly streams = { current: [] as StreamView[] };
  private readonly nginx = { current: [] as Array<NginxStatus & { id: number }> };

  constructor(private readonly source: MetricsSource) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.applies = new Counter({
      name: 'conductor_changes_total',
      help: 'Stream changes, by outcome',
      labelNames: ['instance', 'result'],
      registers,
    });
    this.applyDuration = new Histogram({
      name: 'conductor_apply_duration_seconds',
      help: 'Time to apply one batch of changes, verified',
      labelNames: ['instance'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.reloads = new Counter({
      name: 'conductor_nginx_reloads_total',
      help: 'nginx reloads, by outcome',
      labelNames: ['instance', 'result'],
      registers,
    });
    this.reloadDuration = new Histogram({
      name: 'conductor_nginx_reload_duration_seconds',
      help: 'Time from the reload signal to the new workers',
      labelNames: ['instance'],
      buckets: [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });

    // Totals kept elsewhere (nginx's access log, the controllers) are copied in at each scrape,
    // from one look taken before the registry renders (prom-client collects metrics in parallel).
    const streams = this.streams;
    const perStream = (
      name: string,
      help: string,
      value: (stream: StreamView) => number | undefined,
    ): Counter<'port'> =>
      new Counter({
        name,
        help,
        labelNames: ['port'],
        registers,
        collect() {
          this.reset();
          for (const stream of streams.current) {
            const amount = value(stream);
            if (amount !== undefined) this.inc({ port: String(stream.port) }, amount);
          }
        },
      });
    new Gauge({
      name: 'conductor_stream_up',
      help: '1 when nginx serves the stream, 0 when it was set aside',
      labelNames: ['port', 'protocol'],
      registers,
      collect() {
        this.reset();
        for (const stream of streams.current)
          this.set({ port: String(stream.port), protocol: stream.protocol }, stream.state === 'live' ? 1 : 0);
      },
    });
    new Gauge({
      name: 'conductor_stream_certificate_expiry_seconds',
      help: 'End of validity (Unix time) of the certificate a stream serves (field tlsCert) or the first of its backend CA file to end (backendCa)',
      labelNames: ['port', 'field'],
      registers,
      collect() {
        this.reset();
        for (const stream of streams.current) {
          const ends = new Map<string, number>();
          for (const facts of stream.tlsMaterial?.certificates ?? []) {
            const seconds = Math.floor(new Date(facts.notAfter).getTime() / 1000);
            ends.set(facts.field, Math.min(ends.get(facts.field) ?? seconds, seconds));
          }
          for (const [field, seconds] of ends) this.set({ port: String(stream.port), field }, seconds);
        }
      },
    });
    perStream('conductor_stream_sessions_total', 'Finished sessions', (stream) => stream.stats?.sessions);
    perStream(
      'conductor_stream_failed_sessions_total',
      'Sessions no backend answered',
      (stream) => stream.stats?.failedSessions,
    );
    perStream(
      'conductor_stream_denied_sessions_total',
      'Connections refused by the allow-list',
      (stream) => stream.stats?.deniedSessions,
    );
    perStream(
      'conductor_stream_limited_sessions_total',
      "Connections refused by the stream's session limits",
      (stream) => stream.stats?.limitedSessions,
    );
    perStream(
      'conductor_stream_received_bytes_total',
      'Bytes received from clients',
      (stream) => stream.stats?.bytesIn,
    );
    perStream('conductor_stream_sent_bytes_total', 'Bytes sent to clients', (stream) => stream.stats?.bytesOut);
    // A port that routes by server name: per route. Its label is the route's id, one of at most
    // MAX_ROUTES per port that the operator made (never a name a client sent).
    const perRoute = (name: string, help: string, value: (route: RouteStats) => number): Counter<'port' | 'route'> =>
      new Counter({
        name,
        help,
        labelNames: ['port', 'route'],
        registers,
        collect() {
          this.reset();
          for (const stream of streams.current)
            for (const route of stream.stats?.routes ?? [])
              this.inc({ port: String(stream.port), route: route.route }, value(route));
        },
      });
    perRoute(
      'conductor_route_sessions_total',
      'Finished sessions of a route (by server name)',
      (route) => route.sessions,
    );
    perRoute(
      'conductor_route_failed_sessions_total',
      'Sessions of a route that no backend of the route answered',
      (route) => route.failedSessions,
    );
    perRoute(
      'conductor_route_received_bytes_total',
      'Bytes received from the clients of a route',
      (route) => route.bytesIn,
    );
    perRoute('conductor_route_sent_bytes_total', 'Bytes sent to the clients of a route', (route) => route.bytesOut);
    new Counter({
      name: 'conductor_stream_backend_tls_failures_total',
      help: 'TLS handshakes with a backend that nginx could not complete, by reason (untrusted, expired, not-yet-valid, name-mismatch, verify-other, handshake)',
      labelNames: ['port', 'reason'],
      registers,
      collect() {
        this.reset();
        for (const stream of streams.current)
          for (const [reason, count] of Object.entries(stream.backendTlsFailures?.reasons ?? {}))
            this.inc({ port: String(stream.port), reason }, count);
      },
    });
    new Gauge({
      name: 'conductor_stream_active_connections',
      help: 'Client connections open now',
      labelNames: ['port'],
      registers,
      collect() {
        this.reset();
        for (const stream of streams.current)
          this.set({ port: String(stream.port) }, stream.stats?.activeConnections ?? 0);
      },
    });
    new Gauge({
      name: 'conductor_backend_up',
      help: '1 when the last TCP connect to the backend worked, 0 when it did not',
      labelNames: ['port', 'backend'],
      registers,
      collect() {
        this.reset();
        for (const stream of streams.current) {
          for (const health of stream.stats?.backends ?? []) {
            if (health.state !== 'unknown')
              this.set({ port: String(stream.port), backend: health.backend }, health.state === 'up' ? 1 : 0);
          }
        }
      },
    });
    new Gauge({
      name: 'conductor_backend_connect_seconds',
      help: 'Time the last TCP connect to the backend took',
      labelNames: ['port', 'backend'],
      registers,
      collect() {
        this.reset();
        for (const stream of streams.current) {
          for (const health of stream.stats?.backends ?? []) {
            if (health.latencyMs !== undefined)
              this.set({ port: String(stream.port), backend: health.backend }, health.latencyMs / 1000);
          }
        }
      },
    });
    const nginx = this.nginx;
    new Gauge({
      name: 'conductor_nginx_up',
      help: '1 when the nginx master runs',
      labelNames: ['instance'],
      registers,
      collect() {
        this.reset();
        for (const status of nginx.current)
          this.set({ instance: String(status.id) }, status.state === 'running' ? 1 : 0);
      },
    });
    new Counter({
      name: 'conductor_nginx_restarts_total',
      help: 'Times the daemon had to start nginx again',
      labelNames: ['instance'],
      registers,
      collect() {
        this.reset();
        for (const status of nginx.current) this.inc({ instance: String(status.id) }, status.restarts);
      },
    });
    new Gauge({
      name: 'conductor_nginx_in_line',
      help: '1 when the last audit found the kernel sockets of the master and its processes exactly as the definitions say',
      labelNames: ['instance'],
      registers,
      collect() {
        this.reset();
        for (const status of nginx.current)
          if (status.audit) this.set({ instance: String(status.id) }, status.audit.inLine ? 1 : 0);
      },
    });
    new Counter({
      name: 'conductor_nginx_strays_ended_total',
      help: 'nginx processes of ours outside the serving generation found holding ports, and ended',
      labelNames: ['instance'],
      registers,
      collect() {
        this.reset();
        for (const status of nginx.current)
          if (status.audit) this.inc({ instance: String(status.id) }, status.audit.straysEnded);
      },
    });
    new Gauge({
      name: 'conductor_nginx_draining_workers',
      help: 'Old nginx workers still serving sessions of an earlier configuration',
      labelNames: ['instance'],
      registers,
      collect() {
        this.reset();
        for (const status of nginx.current) this.set({ instance: String(status.id) }, status.drainingWorkers ?? 0);
      },
    });
  }

  apply(instance: number, seconds: number, applied: number, refused: number): void {
    this.applyDuration.observe({ instance: String(instance) }, seconds);
    if (applied > 0) this.applies.inc({ instance: String(instance), result: 'applied' }, applied);
    if (refused > 0) this.applies.inc({ instance: String(instance), result: 'refused' }, refused);
  }

  reload(instance: number, ok: boolean, seconds: number): void {
    this.reloads.inc({ instance: String(instance), result: ok ? 'ok' : 'failed' });
    this.reloadDuration.observe({ instance: String(instance) }, seconds);
  }

  async render(): Promise<string> {
    this.streams.current = await this.source.streams();
    this.nginx.current = this.source.nginx();
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
