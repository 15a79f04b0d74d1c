/**
 * What fleet mode asks of this host's own service (the Conductor): exactly the calls fleet makes,
 * so that fleet depends on this interface rather than on the concrete class.
 */
import type { CreateResult, DaemonStatus, StreamSpec, StreamView } from '@stream-conductor/shared';

export interface LocalService {
  /** Loads what this host applied and brings its nginx in line with it. */
  start(): Promise<void>;
  close(): Promise<void>;
  list(): StreamView[];
  get(port: number): StreamView | undefined;
  /** spanNamed: the definition is the fleet's, whatever its ports (see refuseSilentShrink). */
  put(spec: StreamSpec, ifSpec?: undefined, spanNamed?: boolean): Promise<CreateResult>;
  remove(port: number, options?: { killSessions?: boolean }): Promise<{ warnings: string[] }>;
  /** Closes the port and keeps its sessions until they end or `deadline` (see service/drain.ts). */
  drainUntil(port: number, deadline: Date): Promise<StreamView>;
  /** Calls a drain off: the port takes connections again. */
  undrain(port: number): Promise<CreateResult>;
  /** All or nothing: puts and deletes in one verified apply; answers the warnings. */
  applyChanges(puts: StreamSpec[], deletes: number[]): Promise<string[]>;
  /** Checks a set's TLS files as an apply here does (nothing copied): a 400 naming streams[i] and the field. */
  checkSetTls(specs: StreamSpec[]): Promise<void>;
  checkHealth(port: number): Promise<StreamView>;
  status(): DaemonStatus;
  /** Whether this host removes expired streams itself (fleet: only while cut off from etcd). */
  setExpiryGate(gate: () => boolean): void;
}
