/**
 * What the APIs ask of the daemon: the StreamService interface the HTTP layer calls. The local
 * service (local.ts) does it on this host; in fleet mode the FleetConductor (fleet/) does it
 * through the shared store and converges this host with it. Ports arrive parsed: the routes
 * parse their own input.
 */
import type {
  ApplyPlan,
  ApplyResult,
  CreateResult,
  DaemonStatus,
  DrainAnswer,
  RouteSpec,
  StreamSpec,
  StreamView,
} from '@stream-conductor/shared';

export interface StreamService {
  create(spec: StreamSpec): Promise<CreateResult>;
  /**
   * spanNamed: the caller named the ports (a range in the path, portEnd, "port": "9000-9000"), so a
   * single port on a range's first port shrinks the range rather than being refused.
   */
  put(spec: StreamSpec, ifSpec?: undefined, spanNamed?: boolean): Promise<CreateResult>;
  renew(port: number, expiresAt: string | undefined): Promise<CreateResult>;
  remove(port: number, options?: { killSessions?: boolean }): Promise<{ warnings: string[] }>;
  /** The port refuses new connections; the stream goes when its sessions have, or at the deadline. */
  drain(port: number, timeoutMs: number): Promise<DrainAnswer>;
  /** The drain is called off: the port takes connections again. */
  undrain(port: number): Promise<CreateResult>;
  /**
   * Adds a route by server name to `port` (creating the port with that route alone when it has no
   * stream); 409 when the port has a plain stream or the route's name already.
   */
  addRoute(port: number, route: RouteSpec): Promise<CreateResult>;
  /** Removes one route (routeId: a name, @default or @no-tls); the last one takes the port with it. */
  removeRoute(
    port: number,
    id: string,
  ): Promise<{ removed: 'route' | 'stream'; result?: CreateResult; warnings: string[] }>;
  plan(specs: StreamSpec[], prune: boolean): ApplyPlan;
  /** spanNamed: the ports whose entries named their ports (see put). */
  apply(
    specs: StreamSpec[],
    options: { prune: boolean; dryRun: boolean; spanNamed?: ReadonlySet<number> },
  ): Promise<ApplyResult>;
  freePort(): Promise<number | undefined>;
  list(filter?: ListFilter): StreamView[];
  get(port: number): StreamView | undefined;
  checkHealth(port: number): Promise<StreamView>;
  status(): DaemonStatus;
  close(): Promise<void>;
}

export interface ListFilter {
  /** Every label must match. */
  labels?: Array<[string, string]>;
}

/** Whether a stream with `labels` passes `filter`. */
export function matchesFilter(labels: Record<string, string>, filter: ListFilter): boolean {
  return (filter.labels ?? []).every(([key, value]) => labels[key] === value);
}
