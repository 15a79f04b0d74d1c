/** The types of the apply pipeline: what callers submit and get back, and what flows between its steps. */
import type { ConductorError, StreamRecord, StreamState } from '@stream-conductor/shared';
import type { Logger } from '../../log.js';
import type { PipelineObserver } from '../../observe/metrics.js';
import type { StreamStore } from '../../streams/store.js';
import type { ListeningPorts, PortProbe } from '../../sys/ports.js';
import type { SessionSpan } from '../../sys/sessions.js';
import type { NginxController } from '../process/controller.js';
import type { StreamFileSet } from '../stream-files.js';

/** One port's change: the record it gets, or undefined to remove its stream. */
export interface PortChange {
  port: number;
  record: StreamRecord | undefined;
  /** The caller named the ports: a single port on a range's first port shrinks the range (see admission). */
  spanNamed?: boolean;
}

export type Mutation =
  /** A new stream; refused when the port has one. */
  | { kind: 'create'; record: StreamRecord }
  /**
   * Create or replace; a spec equal to the current one changes nothing. With `ifSpec`, only while
   * the port still holds that definition (a change made meanwhile wins; refused with CONFLICT).
   */
  | { kind: 'put'; record: StreamRecord; ifSpec?: StreamRecord; spanNamed?: boolean }
  /**
   * killSessions: also cut the sessions nginx keeps alive on its old workers. With `ifSpec`, only
   * while the port still holds that definition (as a put's).
   */
  | { kind: 'remove'; port: number; killSessions?: boolean; ifSpec?: StreamRecord }
  /** Several changes applied together in one reload, or not at all. */
  | { kind: 'group'; changes: PortChange[] };

export interface MutationResult {
  warnings: string[];
  change: 'created' | 'replaced' | 'unchanged' | 'removed' | 'applied';
  /**
   * What this change made of its port (created, replaced, unchanged): the answer describes it
   * even when a later change to the same port has already been applied.
   */
  entry?: Entry;
}

export interface Entry {
  record: StreamRecord;
  state: StreamState;
  /** Why a failed entry was set aside. */
  reason?: string;
}

/** A submitted change waiting for its answer. */
export interface Pending {
  mutation: Mutation;
  resolve(result: MutationResult): void;
  reject(error: ConductorError): void;
}

/** A change that passed its checks, with what it makes of its port (undefined: no stream). */
export interface Accepted {
  item: Pending;
  port: number;
  next: Entry | undefined;
  /** A remove: what the port ran before (a range's sessions are cut on all of its ports). */
  previous?: Entry;
  /** A set-aside definition being tried again (its port already has an entry). */
  revive?: boolean;
  /** What the answer says this change did. */
  change: MutationResult['change'];
  /** Unchanged only from what an earlier request of the same batch asks (see admitOne). */
  afterEarlier?: boolean;
}

/** How one try to bring a set of changes live ended. */
export type Attempt =
  | { kind: 'ok'; warnings: string[] }
  /**
   * nginx named the streams it refused: `culprits` among the changes, `bystanders` among the live
   * streams the batch did not touch (a backend name that stopped resolving since, say).
   */
  | { kind: 'culprits'; culprits: Map<number, ConductorError>; bystanders: Map<number, string> }
  | { kind: 'all'; error: ConductorError };

export type Ports = Record<'tcp' | 'udp', number[]>;

export interface InstanceOptions {
  id: number;
  controller: NginxController;
  files: StreamFileSet;
  store: StreamStore;
  /** Asks the kernel whether a port could be bound now for these protocols (see sys/ports.ts). */
  probePort(port: number, protocols: Array<'tcp' | 'udp'>, listenAddress: string | undefined): Promise<PortProbe>;
  /** The ports with listening sockets now (see listeningPorts). */
  listeningPorts(): Promise<ListeningPorts>;
  /** Cuts the established sessions of a port or a range (see sys/sessions.ts). */
  killSessions?(span: SessionSpan): Promise<number>;
  /** The address streams listen on when their definition names none. */
  defaultListenAddress?: string | undefined;
  log: Logger;
  /** How long the listening sockets may take to match after a reload. */
  verifyTimeoutMs?: number;
  /** How often set-aside definitions are tried again; 30 s by default. */
  retryIntervalMs?: number;
  /** Run `nginx -t` before every reload; by default only for an external nginx. */
  testBeforeReload?: boolean;
  /** Told of every batch and every reload (metrics). */
  observer?: PipelineObserver;
  /** How often the audit compares the kernel's sockets and processes with the definitions; 5 s by default, 0: never. */
  auditIntervalMs?: number;
}
