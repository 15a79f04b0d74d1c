/**
 * The apply pipeline of one nginx master: the heart of the daemon.
 *
 * Every change is queued here. Requests that arrive while a reload is in flight are applied
 * together in the next one, because nginx handles only about ten reloads a second. For each batch:
 * check every request (one stream per port, the port not held by another process), write the
 * per-stream files atomically, test the complete configuration with `nginx -t`, reload, wait for
 * the new worker generation and the listening sockets to match, persist the change, and only then
 * answer. When nginx refuses, the files go back to their exact previous bytes; the requests nginx's
 * message blames are refused with that message and the rest are tried again, so one bad request
 * never sinks the good ones in its batch. A group (a declarative apply) is all or nothing.
 */
import { performance } from 'node:perf_hooks';
import {
  ConductorError,
  ErrorCode,
  type NginxAudit,
  type NginxStatus,
  type StreamRecord,
  type StreamState,
  describeBackends,
  protocolsOf,
  sameSpec,
  sameTraffic,
} from '@stream-conductor/shared';
import type { Logger } from '../log.js';
import type { PipelineObserver } from '../observe/metrics.js';
import type { StoreChange, StreamStore } from '../streams/store.js';
import { type ListeningPorts, type PortProbe, isIPv4Mapped, probeReason } from '../sys/ports.js';
import { type NginxLogLine, withoutPaths } from './binary.js';
import { type KernelSocket, canonicalAddress, kernelSockets } from '../sys/sockets.js';
import { type NginxController, type ReloadOutcome, quietOldWorkers, quitOldWorkers } from './controller.js';
import { NginxAuditor } from './audit.js';
import { settleSockets } from './settle.js';
import type { FileSnapshot, StreamFileSet } from './stream-files.js';

/** One port's change: the record it gets, or undefined to remove its stream. */
export interface PortChange {
  port: number;
  record: StreamRecord | undefined;
}

export type Mutation =
  /** A new stream; refused when the port has one. */
  | { kind: 'create'; record: StreamRecord }
  /** Create or replace; a spec equal to the current one changes nothing. */
  | { kind: 'put'; record: StreamRecord }
  /** killSessions: also cut the sessions nginx keeps alive on its old workers. */
  | { kind: 'remove'; port: number; killSessions?: boolean }
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

interface Pending {
  mutation: Mutation;
  resolve(result: MutationResult): void;
  reject(error: ConductorError): void;
}

/** A change that passed its checks, with what it makes of its port (undefined: no stream). */
interface Accepted {
  item: Pending;
  port: number;
  next: Entry | undefined;
  /** A set-aside definition being tried again (its port already has an entry). */
  revive?: boolean;
  /** What the answer says this change did. */
  change: MutationResult['change'];
  /** Unchanged only from what an earlier request of the same batch asks (see admitOne). */
  afterEarlier?: boolean;
}

type Attempt =
  | { kind: 'ok'; warnings: string[] }
  /**
   * nginx named the streams it refused: `culprits` among the changes, `bystanders` among the live
   * streams the batch did not touch (a backend name that stopped resolving since, say).
   */
  | { kind: 'culprits'; culprits: Map<number, ConductorError>; bystanders: Map<number, string> }
  | { kind: 'all'; error: ConductorError };

type Ports = Record<'tcp' | 'udp', number[]>;

export interface InstanceOptions {
  id: number;
  controller: NginxController;
  files: StreamFileSet;
  store: StreamStore;
  /** Asks the kernel whether a port could be bound now for these protocols (see sys/ports.ts). */
  probePort(port: number, protocols: Array<'tcp' | 'udp'>, listenAddress: string | undefined): Promise<PortProbe>;
  /** The ports with listening sockets now (see listeningPorts). */
  listeningPorts(): Promise<ListeningPorts>;
  /** Cuts the established sessions of a port (see sys/sessions.ts). */
  killSessions?(port: number): Promise<number>;
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

const sleep = (ms: number): Promise<void> => new Promise((done) => setTimeout(done, ms));

/** After each reload an nginx master sleeps this long before it handles the next signal. */
export const RELOAD_PAUSE_MS = 100;
/** About how long a batch takes when the master does not pause (a handoff). */
const BATCH_MS = 15;
/** A batch is formed this long before the master's pause ends: time to write the files. */
const GATHER_LEAD_MS = 3;

function describe(entry: Entry): string {
  const to = `to ${describeBackends(entry.record.backends)}`;
  return entry.state === 'failed' ? `${to}, set aside: ${entry.reason ?? 'unknown'}` : to;
}

/** The daemon out of descriptors (its own or the system's), as a refusal that says so; undefined for other errors. */
function exhaustionError(error: unknown): ConductorError | undefined {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code !== 'EMFILE' && code !== 'ENFILE') return undefined;
  return new ConductorError(ErrorCode.StorageFailed, `the daemon is out of file descriptors (too many open files, ${code}): nothing was changed`, {
    hint: "raise the daemon's descriptor limit (ulimit -n, systemd's LimitNOFILE=) or close connections, and try again",
    cause: error,
  });
}

function storageError(error: unknown): ConductorError {
  const exhausted = exhaustionError(error);
  if (exhausted) return exhausted;
  const code = (error as NodeJS.ErrnoException).code;
  const reason =
    code === 'ENOSPC'
      ? 'no space left on the device'
      : code === 'EROFS'
        ? 'the file system is read-only'
        : code === 'EACCES' || code === 'EPERM'
          ? 'permission denied'
          : (code ?? (error as Error).message);
  return new ConductorError(ErrorCode.StorageFailed, `the change could not be written: ${reason}`, {
    hint: 'nothing was changed; free space or fix the folder permissions and try again',
    cause: error,
  });
}

function internal(error: unknown): ConductorError {
  return error instanceof ConductorError ? error : new ConductorError(ErrorCode.Internal, 'internal error', { cause: error });
}

/** The port an nginx message blames: the stream at the file and line it names, or a listen it could not bind. */
export function portBlamed(line: NginxLogLine, files: StreamFileSet): number | undefined {
  const file = / in (\/\S+):([0-9]+)$/.exec(line.text);
  if (file?.[1] !== undefined) {
    const port = files.portAt(file[1], Number(file[2]));
    if (port !== undefined) return port;
  }
  const bind = /bind\(\) to (?:\S+:)?([0-9]+)(?: udp)? failed/.exec(line.text);
  return bind?.[1] === undefined ? undefined : Number(bind[1]);
}

export class NginxInstance {
  private entries = new Map<number, Entry>();
  private queue: Pending[] = [];
  private draining = false;
  private chain: Promise<unknown> = Promise.resolve();
  private closing = false;
  private recoverTimer: NodeJS.Timeout | undefined;
  private recoverDelayMs = 500;
  private reviveTimer: NodeJS.Timeout | undefined;
  /** Until when nginx's master pauses after our last reload (see RELOAD_PAUSE_MS). */
  private pausedUntil = 0;
  /** Whether this master pauses after a reload (SIGHUP) or not (handoffs); see expectedWaitMs. */
  private pauses = true;
  /** idle: nothing queued; gathering: waiting out the master's pause, taking more changes; applying: a batch is in flight. */
  private phase: 'idle' | 'gathering' | 'applying' = 'idle';
  readonly log: Logger;
  private readonly auditor: NginxAuditor;
  private auditTimer: NodeJS.Timeout | undefined;
  private lastAudit: NginxAudit | undefined;
  /** Audits in a row that found the master serving something other than the definitions. */
  private outOfLine = 0;

  constructor(private readonly options: InstanceOptions) {
    this.log = options.log.child({ instance: options.id });
    this.auditor = new NginxAuditor({
      processes: () => options.controller.auditProcesses(),
      expected: () => {
        const expected = new Set<string>();
        for (const entry of this.entries.values()) {
          if (entry.state === 'live') for (const protocol of protocolsOf(entry.record)) expected.add(`${protocol}:${entry.record.port}`);
        }
        return expected;
      },
    });
    options.controller.onUnexpectedExit((message) => {
      this.log.error('nginx died; restarting it', { reason: message });
      this.scheduleRecovery(0);
    });
  }

  get id(): number {
    return this.options.id;
  }

  get controller(): NginxController {
    return this.options.controller;
  }

  get files(): StreamFileSet {
    return this.options.files;
  }

  /** Takes the definitions this instance serves; call before reconcile(). */
  load(records: StreamRecord[]): void {
    for (const record of records) this.entries.set(record.port, { record, state: 'live' });
  }

  list(): Entry[] {
    return [...this.entries.values()];
  }

  get(port: number): Entry | undefined {
    return this.entries.get(port);
  }

  /**
   * About how long a change submitted now would wait before its reload could start: nothing when
   * the master is idle, the rest of its post-reload pause, or a whole pause when a batch is in
   * flight. Used to place new streams on the master that can take them soonest.
   */
  expectedWaitMs(now = Date.now()): number {
    const paused = Math.max(0, this.pausedUntil - now);
    return this.phase === 'applying' ? paused + (this.pauses ? RELOAD_PAUSE_MS : BATCH_MS) : paused;
  }

  /** Reloads, and remembers whether the master now pauses (a handoff leaves no pause behind). */
  private async reload(options?: { urgent?: boolean }): Promise<ReloadOutcome> {
    const started = performance.now();
    const outcome = await this.options.controller.reload(options);
    if (outcome.ok) {
      this.pauses = outcome.pauses !== false;
      this.pausedUntil = this.pauses ? Date.now() + RELOAD_PAUSE_MS : 0;
    }
    this.options.observer?.reload(this.options.id, outcome.ok, (performance.now() - started) / 1000);
    return outcome;
  }

  /**
   * A reload with nothing changed, between batches: nginx's master opens its log files anew and
   * hands them to new workers (which, as an unprivileged user, may not be able to reopen them).
   */
  reloadUnchanged(): Promise<void> {
    return this.exclusive(async () => {
      const wait = this.pausedUntil - Date.now();
      if (wait > 0) await sleep(wait);
      const outcome = await this.reload();
      if (!outcome.ok) this.log.warn('a reload to reopen the logs did not take', { reason: outcome.message });
    });
  }

  /** Queues a change; resolves once it is live, rejects with the reason it was refused. */
  submit(mutation: Mutation): Promise<MutationResult> {
    if (this.closing) {
      return Promise.reject(new ConductorError(ErrorCode.ShuttingDown, 'the daemon is shutting down and takes no more changes'));
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ mutation, resolve, reject });
      void this.drain();
    });
  }

  /** Runs `task` when no batch or recovery is running, and keeps others out until it is done. */
  private exclusive<T>(task: () => Promise<T>): Promise<T> {
    const run = this.chain.then(task);
    this.chain = run.catch(() => undefined);
    return run;
  }

  /**
   * Applies what is queued, batch after batch. While the master pauses after a reload (it would
   * not take the next one before the pause ends anyway), the batch stays open and takes every
   * change that arrives; it is closed just before the pause ends.
   */
  private async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.queue.length > 0) {
        const wait = this.pausedUntil - Date.now() - GATHER_LEAD_MS;
        if (wait > 0) {
          this.phase = 'gathering';
          await sleep(wait);
        }
        this.phase = 'applying';
        // A group goes alone (all or nothing); everything else that queued up goes together.
        const groupAt = this.queue.findIndex((item) => item.mutation.kind === 'group');
        const batch = groupAt === 0 ? this.queue.splice(0, 1) : this.queue.splice(0, groupAt < 0 ? this.queue.length : groupAt);
        await this.exclusive(() => this.applyBatch(batch)).catch((error: unknown) => {
          this.log.error('apply failed unexpectedly', { error });
          const failure = new ConductorError(ErrorCode.Internal, 'internal error while applying the change', { cause: error });
          for (const item of batch) item.reject(failure);
        });
      }
    } finally {
      this.draining = false;
      this.phase = 'idle';
    }
  }

  private listenAddressOf(record: StreamRecord): string | undefined {
    return record.listenAddress ?? this.options.defaultListenAddress;
  }

  /** Refuses `next` when another process holds a port or protocol our nginx does not hold yet. */
  private async checkPortFree(next: StreamRecord, current: Entry | undefined): Promise<void> {
    const held = current?.state === 'live' ? protocolsOf(current.record) : [];
    const needed = protocolsOf(next).filter((protocol) => !held.includes(protocol));
    if (needed.length === 0) return;
    const probe = await this.options.probePort(next.port, needed, this.listenAddressOf(next)).catch((error: unknown) => {
      throw exhaustionError(error) ?? error;
    });
    if (probe === 'in-use') {
      throw new ConductorError(ErrorCode.PortInUse, `port ${next.port}${needed.includes('tcp') ? '' : '/udp'} is held by another process on this host`, {
        hint: 'free the port or pick another one (conductor free-port finds one)',
      });
    }
    if (probe === 'denied') {
      throw new ConductorError(ErrorCode.PortInUse, `port ${next.port} cannot be bound on this host: permission denied`, {
        hint: 'ports below 1024 need root or CAP_NET_BIND_SERVICE',
      });
    }
    if (probe === 'unavailable') {
      const address = this.listenAddressOf(next) ?? '0.0.0.0';
      throw new ConductorError(ErrorCode.InvalidInput, `listen address ${address} cannot be bound on this host: it is not one of its addresses`, {
        hint: isIPv4Mapped(address) ? 'an IPv4-mapped IPv6 address is never bound by nginx: write the IPv4 address itself (127.0.0.1, not ::ffff:127.0.0.1)' : 'pick an address this host has (ip -brief address), or leave the listen address out',
      });
    }
  }

  /** Checks one port's change against the state the earlier changes leave in `working`. */
  private async admitOne(item: Pending, port: number, record: StreamRecord | undefined, createOnly: boolean, working: Map<number, Entry>): Promise<Accepted> {
    const existing = working.get(port);
    if (record === undefined) {
      if (!existing) throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
      working.delete(port);
      return { item, port, next: undefined, change: 'removed' };
    }
    if (existing && !createOnly && existing.state === 'live' && sameSpec(existing.record, record)) {
      // Unchanged from what runs: answered at once. Unchanged from what an earlier request of this
      // batch asks: answered with that request's outcome (nginx may still refuse it).
      return { item, port, next: existing, change: 'unchanged', ...(existing === this.entries.get(port) ? {} : { afterEarlier: true }) };
    }
    if (existing && createOnly) {
      throw new ConductorError(ErrorCode.StreamExists, `port ${port} already has a stream (${describe(existing)})`, {
        hint: 'remove it first, pick another port, or replace it (PUT /v1/streams/{port})',
      });
    }
    // What our nginx listens on right now, on this port, is ours to reuse.
    const current = this.entries.get(port);
    if (existing && current?.state === 'live' && this.listenAddressOf(current.record) !== this.listenAddressOf(record)) {
      throw new ConductorError(ErrorCode.Conflict, `port ${port}: a live stream cannot move to another listen address in place`, {
        hint: 'remove the stream, then create it with the new address',
      });
    }
    await this.checkPortFree(record, current);
    const next: Entry = { record, state: 'live' };
    working.set(port, next);
    return { item, port, next, change: existing ? 'replaced' : 'created' };
  }

  /** Checks each request in arrival order against the state the earlier ones leave. */
  private async admit(batch: Pending[]): Promise<Accepted[]> {
    const working = new Map(this.entries);
    const accepted: Accepted[] = [];
    for (const item of batch) {
      const { mutation } = item;
      try {
        if (mutation.kind === 'group') {
          // All or nothing: one refused change refuses the group.
          const group: Accepted[] = [];
          for (const change of mutation.changes) group.push(await this.admitOne(item, change.port, change.record, false, working));
          accepted.push(...group.filter((one) => one.change !== 'unchanged'));
          if (group.every((one) => one.change === 'unchanged')) item.resolve({ warnings: [], change: 'unchanged' });
        } else if (mutation.kind === 'remove') {
          accepted.push(await this.admitOne(item, mutation.port, undefined, false, working));
        } else {
          const one = await this.admitOne(item, mutation.record.port, mutation.record, mutation.kind === 'create', working);
          if (one.change === 'unchanged' && !one.afterEarlier) item.resolve({ warnings: [], change: 'unchanged', ...(one.next ? { entry: { ...one.next } } : {}) });
          else accepted.push(one);
        }
      } catch (error) {
        item.reject(internal(error));
      }
    }
    return accepted;
  }

  /** After some requests were dropped, drops the later ones that relied on them. */
  private consistent(accepted: Accepted[]): Accepted[] {
    const working = new Map(this.entries);
    return accepted.filter((one) => {
      const { item, port, next, revive } = one;
      const present = working.has(port);
      if (next && present && one.change === 'created' && !revive) {
        item.reject(new ConductorError(ErrorCode.StreamExists, `port ${port} already has a stream`));
        return false;
      }
      if (!next && !present) {
        item.reject(new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`));
        return false;
      }
      if (next) working.set(port, next);
      else working.delete(port);
      return true;
    });
  }

  private async applyBatch(batch: Pending[]): Promise<void> {
    const started = performance.now();
    const accepted = await this.admit(batch);
    let outcome = { applied: 0, attempts: 0 };
    if (accepted.length > 0 && !(await this.options.controller.isRunning())) {
      const reason = this.options.controller.status().message;
      const error = new ConductorError(ErrorCode.NginxUnavailable, `nginx is not running${reason ? `: ${withoutPaths(reason)}` : ''}`, {
        hint: 'the daemon keeps trying to start it; `conductor status` shows why it is down',
      });
      for (const { item } of accepted) item.reject(error);
    } else if (batch[0]?.mutation.kind === 'group') {
      outcome = await this.applyGroup(batch[0], accepted);
    } else {
      outcome = await this.applyAccepted(accepted);
    }
    const ms = performance.now() - started;
    this.options.observer?.apply(this.options.id, ms / 1000, outcome.applied, batch.length - outcome.applied);
    this.log.info('apply', {
      requests: batch.length,
      applied: outcome.applied,
      refused: batch.length - outcome.applied,
      attempts: outcome.attempts,
      ms: Math.round(ms),
    });
  }

  /** A group: one attempt; any refusal refuses it whole, with nginx's reason. */
  private async applyGroup(item: Pending, accepted: Accepted[]): Promise<{ applied: number; attempts: number }> {
    if (accepted.length === 0) return { applied: 0, attempts: 0 }; // refused at admission
    let attempt = await this.attempt(accepted);
    let attempts = 1;
    if (attempt.kind === 'culprits' && attempt.culprits.size === 0) {
      // Only streams outside the group were refused: they are set aside, the group goes on.
      for (const [port, reason] of attempt.bystanders) await this.setAside(port, reason);
      attempt = await this.attempt(accepted);
      attempts = 2;
      if (attempt.kind !== 'ok') await this.reloadSetAside(); // nginx still drops what was set aside
    }
    if (attempt.kind === 'ok') {
      item.resolve({ warnings: attempt.warnings, change: 'applied' });
      return { applied: 1, attempts };
    }
    const refusal = attempt.kind === 'all' ? attempt.error : attempt.culprits.values().next().value;
    item.reject(refusal ?? new ConductorError(ErrorCode.NginxRejected, 'nginx refused the change'));
    return { applied: 0, attempts };
  }

  /**
   * Brings as many of `accepted` live as nginx takes: all in one reload when it can, the ones
   * nginx blames refused with its message, one at a time when it refuses without saying why.
   */
  private async applyAccepted(initial: Accepted[]): Promise<{ applied: number; attempts: number }> {
    let accepted = initial;
    let attempts = 0;
    let applied = 0;
    /** Streams were set aside and no reload has taken their files' new state since. */
    let setAsideSince = false;
    const settle = async (done: Accepted[], warnings: string[]): Promise<void> => {
      for (const one of done) {
        const { mutation } = one.item;
        if (mutation.kind === 'remove' && mutation.killSessions) await this.cutSessions(one.port, warnings);
        one.item.resolve({ warnings, change: one.change, ...(one.next ? { entry: { ...one.next } } : {}) });
      }
    };
    while (accepted.length > 0) {
      attempts += 1;
      const attempt = await this.attempt(accepted);
      if (attempt.kind === 'ok') {
        await settle(accepted, attempt.warnings);
        applied += accepted.length;
        if (accepted.length > 0) setAsideSince = false;
        break;
      }
      if (attempt.kind === 'culprits') {
        // A live stream nginx no longer takes is set aside, as at start-up, so that it does not
        // block every other change of this master; the retry brings it back once it can serve.
        for (const [port, reason] of attempt.bystanders) await this.setAside(port, reason);
        if (attempt.bystanders.size > 0) setAsideSince = true;
        accepted = this.consistent(
          accepted.filter(({ item, port, next }) => {
            const error = next ? attempt.culprits.get(port) : undefined;
            if (error) item.reject(error);
            return error === undefined;
          }),
        );
        continue;
      }
      const global = attempt.error.code === ErrorCode.NginxUnavailable || attempt.error.code === ErrorCode.StorageFailed;
      if (accepted.length === 1 || global) {
        for (const { item } of accepted) item.reject(attempt.error);
        break;
      }
      // nginx refused the batch without naming a culprit: find it by applying one at a time.
      for (const one of accepted) {
        const single = await this.attempt(this.consistent([one]));
        attempts += 1;
        if (single.kind === 'ok') {
          await settle([one], single.warnings);
          applied += 1;
        } else {
          one.item.reject(single.kind === 'all' ? single.error : (single.culprits.values().next().value ?? attempt.error));
        }
      }
      break;
    }
    // Every change of the batch was refused, but streams were set aside: nginx must drop them too,
    // or it would go on serving what the listing calls failed.
    if (setAsideSince) await this.reloadSetAside();
    return { applied, attempts };
  }

  /** A reload that only drops set-aside streams (their files are gone already). */
  private async reloadSetAside(): Promise<void> {
    const outcome = await this.reload();
    if (!outcome.ok) {
      this.log.error('nginx did not take the configuration without the set-aside streams', { reason: outcome.message });
      return;
    }
    await quitOldWorkers(outcome.previousWorkers ?? []);
  }

  /**
   * Takes a live stream out of nginx's files (the next reload drops it) and marks it failed with
   * nginx's reason; its definition stays, and the retry tries it again.
   */
  private async setAside(port: number, reason: string): Promise<void> {
    const entry = this.entries.get(port);
    if (!entry || entry.state !== 'live') return;
    await this.options.files.apply([], [port]);
    this.entries.set(port, { record: entry.record, state: 'failed', reason });
    this.log.warn('stream set aside: nginx no longer takes it', { port, backends: describeBackends(entry.record.backends), reason });
    this.options.observer?.finding?.(this.options.id, 'set-aside', [port], reason);
    this.scheduleRevival();
  }

  /** Cuts the sessions nginx keeps alive on its old workers after a remove. */
  private async cutSessions(port: number, warnings: string[]): Promise<void> {
    if (!this.options.killSessions) {
      warnings.push('cutting established sessions is not available on this host');
      return;
    }
    try {
      const cut = await this.options.killSessions(port);
      this.log.info('sessions cut', { port, sessions: cut });
    } catch (error) {
      warnings.push(`the established sessions of port ${port} could not be cut: ${(error as Error).message}`);
    }
  }

  /**
   * Tries the set-aside definitions again, so that a stream comes back by itself once its port is
   * free again or its backend name resolves again.
   */
  private async reviveNow(): Promise<void> {
    const failed = [...this.entries.values()].filter((entry) => entry.state === 'failed');
    if (failed.length === 0 || this.closing || !(await this.options.controller.isRunning())) return;
    const accepted: Accepted[] = [];
    for (const entry of failed) {
      const { port } = entry.record;
      const probe = await this.options.probePort(port, protocolsOf(entry.record), this.listenAddressOf(entry.record));
      if (probe !== 'free') {
        entry.reason = probeReason(probe);
        continue;
      }
      const item: Pending = {
        mutation: { kind: 'put', record: entry.record },
        resolve: () => this.log.info('set-aside stream is live again', { port, backends: describeBackends(entry.record.backends) }),
        reject: (error) => {
          entry.reason = error.message.replace(/^nginx refused the stream on port [0-9]+: /, 'nginx: ');
        },
      };
      accepted.push({ item, port, next: { record: entry.record, state: 'live' }, revive: true, change: 'replaced' });
    }
    if (accepted.length > 0) await this.applyAccepted(accepted);
  }

  /**
   * At start-up, after every master is in line: a stream set aside because its port could not be
   * bound may have been held by another of our masters that has let it go since (a remove or a
   * move cut short when the earlier daemon died). Waits up to `timeoutMs` for such ports to be
   * free, then tries them again, instead of at the next retry.
   */
  reviveHeldPorts(timeoutMs: number): Promise<void> {
    const retry = this.exclusive(async () => {
      const held = (): Entry[] => [...this.entries.values()].filter((entry) => entry.state === 'failed' && /bind\(\).*Address already in use/.test(entry.reason ?? ''));
      if (held().length === 0) return;
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        let free = true;
        for (const entry of held()) {
          if ((await this.options.probePort(entry.record.port, protocolsOf(entry.record), this.listenAddressOf(entry.record))) !== 'free') free = false;
        }
        if (free || Date.now() > deadline) break;
        await sleep(50);
      }
      await this.reviveNow();
    });
    // Start-up goes on whatever happens here: the streams stay set aside, tried again later.
    return retry.catch((error: unknown) => this.log.error('trying set-aside streams again failed', { error }));
  }

  private scheduleRevival(): void {
    if (this.closing || this.reviveTimer) return;
    if (![...this.entries.values()].some((entry) => entry.state === 'failed')) return;
    this.reviveTimer = setTimeout(() => {
      this.reviveTimer = undefined;
      this.exclusive(() => this.reviveNow())
        .catch((error: unknown) => this.log.error('trying set-aside streams again failed', { error }))
        .finally(() => this.scheduleRevival());
    }, this.options.retryIntervalMs ?? 30_000);
    this.reviveTimer.unref();
  }

  /** Tries to bring `accepted` live in one reload. */
  private async attempt(accepted: Accepted[]): Promise<Attempt> {
    if (accepted.length === 0) return { kind: 'ok', warnings: [] };
    const target = new Map(this.entries);
    for (const { port, next } of accepted) {
      if (next) target.set(port, next);
      else target.delete(port);
    }
    const touched = [...new Set(accepted.map((one) => one.port))];
    const write: StreamRecord[] = [];
    const remove: number[] = [];
    const opened: Ports = { tcp: [], udp: [] };
    const closed: Ports = { tcp: [], udp: [] };
    let nginxChanges = false;
    /** Ports that keep listening with a new configuration (their sockets pass to the new workers). */
    let changedInPlace = false;
    const inPlace: Ports = { tcp: [], udp: [] };
    for (const port of touched) {
      const before = this.entries.get(port);
      const after = target.get(port);
      const was = before?.state === 'live' ? protocolsOf(before.record) : [];
      const will = after?.state === 'live' ? protocolsOf(after.record) : [];
      for (const protocol of will) if (!was.includes(protocol)) opened[protocol].push(port);
      for (const protocol of was) if (!will.includes(protocol)) closed[protocol].push(port);
      if (after?.state === 'live') {
        write.push(after.record);
        if (before?.state !== 'live' || !sameTraffic(before.record, after.record)) nginxChanges = true;
        if (before?.state === 'live' && !sameTraffic(before.record, after.record)) {
          changedInPlace = true;
          for (const protocol of will) if (was.includes(protocol)) inPlace[protocol].push(port);
        }
      } else if (before?.state === 'live') {
        remove.push(port);
        nginxChanges = true;
      }
    }
    const phases: Record<string, number> = {};
    let mark = performance.now();
    const phase = (name: string): void => {
      const at = performance.now();
      phases[name] = Math.round((at - mark) * 10) / 10;
      mark = at;
    };
    const snapshot = await this.options.files.snapshot(touched);
    const undo = async (): Promise<void> => {
      await this.options.files.restore(snapshot).catch((error: unknown) => {
        this.log.error('could not restore the previous stream files', { error });
      });
    };
    try {
      await this.options.files.apply(write, remove);
    } catch (error) {
      await undo();
      return { kind: 'all', error: storageError(error) };
    }
    phase('files');
    /** What the store holds for the touched ports when `entries` is the state. */
    const storeChange = (entries: Map<number, Entry>): StoreChange => ({
      put: touched.flatMap((port) => {
        const entry = entries.get(port);
        return entry ? [entry.record] : [];
      }),
      remove: touched.filter((port) => !entries.has(port)),
    });
    // Created and removed streams are stored while nginx takes the change: the flush to disk takes
    // as long as a handoff's better part, and the answer waits for both. A change nginx refuses is
    // taken out of the store again before the refusal is answered (see unstore); listings read
    // the instance, never the store. A stream changed in place is stored only once nginx took it:
    // a daemon killed meanwhile must not come back with a definition nginx may refuse in place of
    // one that served.
    let stored: Promise<unknown> | undefined;
    const store = (): Promise<unknown> =>
      (stored ??= this.options.store.commit(storeChange(target)).then(
        () => undefined,
        (error: unknown) => error ?? new Error('the store write failed'),
      ));
    if (!changedInPlace) void store();
    const unstore = async (): Promise<void> => {
      if (stored === undefined || (await stored) !== undefined) return; // never written
      await this.options.store.commit(storeChange(this.entries)).catch((error: unknown) => {
        this.log.error('could not take a refused change out of the store; the next start applies it', { error, ports: touched });
      });
    };
    const warnings: string[] = [];
    try {
      if (nginxChanges) {
        // A managed nginx parses the whole configuration on reload and keeps the running one when
        // it fails, with the reason in its error log: the reload is the test. An external nginx
        // is tested first, since its error log may be out of reach.
        if (this.options.testBeforeReload ?? this.options.controller.mode === 'external') {
          const test = await this.options.controller.test();
          phase('test');
          if (!test.ok) {
            await undo();
            await unstore();
            return this.blame(test.lines, test.message, accepted, ErrorCode.NginxRejected);
          }
        }
        const closing = closed.tcp.length + closed.udp.length > 0;
        // The kernel's sockets for what closes or changes, taken before nginx lets go of them:
        // the answer waits until the kernel shows them closed, or held by new workers only.
        let closingSockets: KernelSocket[] = [];
        let changedSockets: KernelSocket[] = [];
        try {
          closingSockets = closing ? this.socketsOf(closed, this.entries) : [];
          changedSockets = changedInPlace ? this.socketsOf(inPlace, this.entries) : [];
        } catch (error) {
          // Without them the answer could not be proven: refused, with the files as they were.
          await undo();
          await unstore();
          this.log.error("could not read the kernel's sockets before a change", { error });
          return { kind: 'all', error: new ConductorError(ErrorCode.Internal, "the kernel's sockets could not be read; nothing was changed", { cause: error }) };
        }
        const reload = await this.reload({ urgent: closing || changedInPlace });
        phase('reload');
        if (!reload.ok) {
          await undo();
          await unstore();
          await this.resync(reload);
          const code = reload.code === 'NGINX_UNAVAILABLE' ? ErrorCode.NginxUnavailable : reload.lines.some((line) => /bind\(\)/.test(line.text)) ? ErrorCode.ReloadFailed : ErrorCode.NginxRejected;
          return this.blame(reload.lines, reload.message, accepted, code);
        }
        // New workers prove the master parsed everything and bound every listening socket of its
        // configuration. Only an external nginx might not include our folder at all: ask the
        // kernel.
        if (this.options.controller.mode === 'external') {
          const sockets = await this.verifySockets(opened, { tcp: [], udp: [] });
          phase('verify');
          if (sockets.missing.length > 0) {
            await this.revert(snapshot);
            await unstore();
            return {
              kind: 'all',
              error: new ConductorError(ErrorCode.ReloadFailed, `nginx reloaded but nothing listens on port ${sockets.missing.join(', ')}`, {
                hint: "is STREAM_CONFIG_PATH included inside nginx's stream {} block?",
              }),
            };
          }
        }
        // Removed ports close, and changed ones stop reaching the old backend, once no process of
        // an earlier generation holds their sockets: proven from the kernel, not from signals.
        if (closing || changedInPlace) {
          const previous = reload.previousWorkers ?? [];
          await quitOldWorkers(previous);
          // nginx has taken the change: a failure to check it is said in the answer, not thrown.
          const lingering = await settleSockets({
            closing: closingSockets,
            changed: changedSockets,
            old: () => this.options.controller.oldProcesses(previous),
            timeoutMs: this.options.verifyTimeoutMs ?? 3000,
            log: this.log,
          }).catch((error: unknown) => {
            this.log.error("could not check the kernel's sockets after a change", { error });
            return [...closed.tcp, ...closed.udp, ...inPlace.tcp, ...inPlace.udp];
          });
          if (lingering.length > 0) {
            this.log.error('a port still served by an old nginx process after the change', { ports: lingering });
            warnings.push(`port ${lingering.join(', ')} may still take connections: an old nginx process did not let go of it (the audit keeps trying)`);
          }
        }
        phase('drain');
      }
    } catch (error) {
      await unstore(); // not answered as done, so not kept
      throw error;
    }
    const storeError = await store();
    if (storeError !== undefined) {
      if (nginxChanges) await this.revert(snapshot);
      else await undo();
      return { kind: 'all', error: storageError(storeError) };
    }
    phase('store');
    this.entries = target;
    this.log.debug('attempt', { ports: touched.length, ...phases });
    return { kind: 'ok', warnings };
  }

  /**
   * Puts the files back and reloads, after nginx had already taken the change; returns only once
   * the workers of the refused configuration stopped taking connections.
   */
  private async revert(snapshot: FileSnapshot): Promise<void> {
    await this.options.files.restore(snapshot).catch((error: unknown) => this.log.error('could not restore the previous stream files', { error }));
    const outcome = await this.reload();
    if (!outcome.ok) {
      this.log.error('could not reload nginx back to the previous configuration', { reason: outcome.message });
      return;
    }
    if (!(await quietOldWorkers(outcome.previousWorkers ?? [], this.options.verifyTimeoutMs ?? 3000))) {
      this.log.error('the workers of the refused configuration were slow to stop');
    }
  }

  /**
   * After a failed reload the files are back as they were. nginx is too when it said why it gave
   * up; when the outcome is unknown (a timeout), one more reload brings it in line with the files.
   */
  private async resync(outcome: ReloadOutcome): Promise<void> {
    if (outcome.code !== 'RELOAD_FAILED' || outcome.lines.some((line) => line.level === 'emerg')) return;
    const again = await this.reload();
    if (!again.ok) this.log.error('nginx did not take the previous configuration back', { reason: again.message });
  }

  private blame(lines: NginxLogLine[], message: string, accepted: Accepted[], code: ErrorCode): Attempt {
    const creating = new Set(accepted.filter((one) => one.next).map((one) => one.port));
    const touched = new Set(accepted.map((one) => one.port));
    const culprits = new Map<number, ConductorError>();
    const bystanders = new Map<number, string>();
    for (const line of lines) {
      const port = portBlamed(line, this.options.files);
      const fatal = line.level === 'emerg' || line.level === 'alert';
      if (fatal && port !== undefined && !touched.has(port) && this.entries.get(port)?.state === 'live' && !bystanders.has(port)) {
        bystanders.set(port, `nginx: ${withoutPaths(line.text)}`);
        continue;
      }
      if (port === undefined || !creating.has(port) || culprits.has(port)) continue;
      const inUse = /Address already in use/.test(line.text);
      culprits.set(
        port,
        new ConductorError(inUse ? ErrorCode.PortInUse : code, `nginx refused the stream on port ${port}: ${withoutPaths(line.text)}`, {
          hint: inUse ? 'another process took the port' : undefined,
        }),
      );
    }
    if (culprits.size > 0 || bystanders.size > 0) return { kind: 'culprits', culprits, bystanders };
    const prefix = code === ErrorCode.NginxUnavailable ? 'nginx is not available' : 'nginx refused the change';
    return { kind: 'all', error: new ConductorError(code, `${prefix}: ${withoutPaths(message)}`) };
  }

  /** The kernel's sockets our nginx holds now for `ports`, as `entries` defines them (port, protocol, address). */
  private socketsOf(ports: Ports, entries: Map<number, Entry>): KernelSocket[] {
    const wanted = new Map<string, string>();
    for (const protocol of ['tcp', 'udp'] as const) {
      for (const port of ports[protocol]) {
        const entry = entries.get(port);
        if (entry) wanted.set(`${protocol}:${port}`, canonicalAddress(this.listenAddressOf(entry.record) ?? '0.0.0.0'));
      }
    }
    if (wanted.size === 0) return [];
    const sockets = kernelSockets();
    const found = sockets.filter((socket) => wanted.get(`${socket.protocol}:${socket.port}`) === socket.address);
    // A live port whose socket no address matched (an address written another way): its port and
    // protocol alone, rather than no proof at all.
    const matched = new Set(found.map((socket) => `${socket.protocol}:${socket.port}`));
    const unmatched = [...wanted.keys()].filter((key) => !matched.has(key));
    if (unmatched.length > 0) this.log.warn('no kernel socket matched the listen address of a live stream; matching its port alone', { ports: unmatched });
    return [...found, ...sockets.filter((socket) => unmatched.includes(`${socket.protocol}:${socket.port}`))];
  }

  /** Waits until the kernel shows the new ports listening and the removed ones closed. */
  private async verifySockets(opened: Ports, closed: Ports): Promise<{ missing: number[]; lingering: number[] }> {
    const count = opened.tcp.length + opened.udp.length + closed.tcp.length + closed.udp.length;
    if (count === 0) return { missing: [], lingering: [] };
    const deadline = Date.now() + (this.options.verifyTimeoutMs ?? 3000);
    for (let round = 0; ; round += 1) {
      const listening = await this.options.listeningPorts();
      const missing = [...opened.tcp.filter((port) => !listening.tcp.has(port)), ...opened.udp.filter((port) => !listening.udp.has(port))];
      const lingering = [...closed.tcp.filter((port) => listening.tcp.has(port)), ...closed.udp.filter((port) => listening.udp.has(port))];
      if ((missing.length === 0 && lingering.length === 0) || Date.now() > deadline) {
        return { missing: [...new Set(missing)], lingering: [...new Set(lingering)] };
      }
      await sleep(round < 20 ? 2 : 10);
    }
  }

  /**
   * Brings nginx in line at start-up. Never throws: when nginx cannot run at all, the daemon
   * keeps serving its API, reports nginx down, and keeps trying with a growing delay.
   */
  async start(): Promise<void> {
    try {
      await this.reconcile();
    } catch (error) {
      this.log.error('nginx could not be started; trying again', { error, inMs: this.recoverDelayMs });
      this.scheduleRecovery(this.recoverDelayMs);
    }
  }

  /**
   * Makes the files and nginx match the definitions: at start-up, and after nginx died. Every
   * definition is tried, also those set aside before; what nginx cannot take is set aside again
   * with the reason, and the rest is served.
   */
  reconcile(): Promise<void> {
    return this.exclusive(() => this.reconcileNow());
  }

  private async reconcileNow(): Promise<void> {
    const { files, controller } = this.options;
    const scan = await files.scan();
    for (const name of scan.temporary) await files.removeTemporary(name);
    for (const entry of this.entries.values()) {
      entry.state = 'live';
      delete entry.reason;
    }
    const setAside = async (port: number, reason: string): Promise<void> => {
      const entry = this.entries.get(port);
      if (!entry) return;
      entry.state = 'failed';
      entry.reason = reason;
      await files.apply([], [port]);
      this.log.warn('stream set aside', { port, backends: describeBackends(entry.record.backends), reason });
    };
    // Files of ours that no definition claims go; every live definition is (re)written.
    const wanted = new Set(this.entries.keys());
    await files.apply([], scan.ours.filter((port) => !wanted.has(port)));
    await files.apply([...this.entries.values()].map((entry) => entry.record), []);
    await controller.clearLeftovers();
    if (!(await controller.isRunning())) {
      // Nothing of ours listens yet, so a port that cannot be bound is held by someone else.
      for (const entry of this.entries.values()) {
        const probeNow = (): Promise<PortProbe> => this.options.probePort(entry.record.port, protocolsOf(entry.record), this.listenAddressOf(entry.record));
        let probe = await probeNow();
        if (probe === 'in-use') {
          // A worker the dead master forked just before it died still had its master's title at
          // the first look (so it passed for a master): it is ours, and goes now.
          await controller.clearLeftovers();
          probe = await probeNow();
        }
        if (probe !== 'free') {
          await setAside(entry.record.port, probeReason(probe));
        }
      }
    }
    for (let round = 0; round <= this.entries.size; round += 1) {
      const test = await controller.test();
      let outcome: ReloadOutcome | undefined;
      let lines = test.lines;
      if (test.ok) {
        outcome = await controller.start();
        if (outcome.ok) break;
        lines = outcome.lines;
      }
      const blamed = new Map<number, string>();
      for (const line of lines) {
        const port = portBlamed(line, files);
        if (port !== undefined && this.entries.get(port)?.state === 'live' && !blamed.has(port)) blamed.set(port, withoutPaths(line.text));
      }
      if (blamed.size === 0) {
        const reason = withoutPaths(test.ok ? (outcome?.message ?? 'nginx did not start') : test.message);
        this.log.error('nginx cannot run the configuration', { reason });
        throw new ConductorError(test.ok ? ErrorCode.NginxUnavailable : ErrorCode.NginxRejected, reason);
      }
      for (const [port, reason] of blamed) await setAside(port, `nginx: ${reason}`);
    }
    const opened: Ports = { tcp: [], udp: [] };
    for (const entry of this.entries.values()) {
      if (entry.state === 'live') for (const protocol of protocolsOf(entry.record)) opened[protocol].push(entry.record.port);
    }
    // Ports a running nginx served from files that are gone now close once its old workers leave.
    const gone = scan.ours.filter((port) => this.entries.get(port)?.state !== 'live');
    const sockets = await this.verifySockets(opened, { tcp: gone, udp: [] });
    for (const port of sockets.missing) this.log.error('stream not listening after start', { port });
    for (const port of sockets.lingering) this.log.warn('port still listening after its stream was dropped', { port });
    this.recoverDelayMs = 500;
    this.scheduleRevival();
    this.scheduleAudit();
    const live = [...this.entries.values()].filter((entry) => entry.state === 'live').length;
    this.log.info('nginx in line with the definitions', { live, failed: this.entries.size - live });
  }

  private scheduleRecovery(delayMs: number): void {
    if (this.closing || this.recoverTimer) return;
    this.recoverTimer = setTimeout(() => {
      this.recoverTimer = undefined;
      this.reconcile().catch((error: unknown) => {
        this.recoverDelayMs = Math.min(this.recoverDelayMs * 2, 30_000);
        this.log.error('nginx could not be restarted; trying again', { error, inMs: this.recoverDelayMs });
        this.scheduleRecovery(this.recoverDelayMs);
      });
    }, delayMs);
  }

  /** nginx's status with what the last audit found. */
  status(): NginxStatus {
    const status = this.options.controller.status();
    return this.lastAudit ? { ...status, audit: this.lastAudit } : status;
  }

  /**
   * One audit, between changes (a change in flight legitimately has two generations). Strays are
   * told to go; a master found serving other ports than the definitions twice in a row is brought
   * back in line by a reconcile, as after a crash.
   */
  audit(): Promise<NginxAudit | undefined> {
    return this.exclusive(async () => {
      const findings = await this.auditor.run();
      if (!findings) {
        this.lastAudit = undefined; // no master, or none that may be read: no verdict to show
        return undefined;
      }
      const { audit, signalled } = findings;
      this.lastAudit = audit;
      const observer = this.options.observer;
      for (const stray of signalled) {
        this.log.warn('a stray nginx process of ours held ports; ending it', { pid: stray.pid, signal: stray.signal, ports: stray.ports });
        observer?.finding?.(this.options.id, 'audit', stray.ports, `stray nginx process ${stray.pid} held ports; sent ${stray.signal}`);
      }
      // No worker: nginx could not fork the new generation (a process limit, say) and told the old
      // one to quit: nothing accepts on any port until a reload gets workers started again.
      const workerless = audit.workers === 0 && !audit.inLine && audit.strays === 0;
      const differs = audit.missing.length > 0 || audit.extra.length > 0 || workerless;
      this.outOfLine = differs ? this.outOfLine + 1 : 0;
      if (differs) {
        this.log.error('nginx serves other ports than the definitions', { missing: audit.missing, extra: audit.extra, workers: audit.workers, rounds: this.outOfLine });
        const what = workerless ? 'no worker takes connections' : `missing ${audit.missing.join(',') || '-'}, extra ${audit.extra.join(',') || '-'}`;
        if (this.outOfLine === 1) observer?.finding?.(this.options.id, 'audit', [...audit.missing, ...audit.extra], `out of line: ${what}`);
      }
      return audit;
    }).then((audit) => {
      if (this.outOfLine >= 2) {
        this.outOfLine = 0;
        this.log.error('bringing nginx back in line with the definitions');
        this.scheduleRecovery(0);
      }
      return audit;
    });
  }

  private scheduleAudit(): void {
    const interval = this.options.auditIntervalMs ?? 5000;
    if (this.closing || this.auditTimer || interval <= 0) return;
    this.auditTimer = setTimeout(() => {
      this.auditTimer = undefined;
      this.audit()
        .catch((error: unknown) => this.log.error('the audit failed', { error }))
        .finally(() => this.scheduleAudit());
    }, interval);
    this.auditTimer.unref();
  }

  /** Refuses new changes, lets the running batch finish, and stops nginx (managed mode). */
  async close(): Promise<void> {
    this.closing = true;
    if (this.auditTimer) clearTimeout(this.auditTimer);
    if (this.recoverTimer) clearTimeout(this.recoverTimer);
    if (this.reviveTimer) clearTimeout(this.reviveTimer);
    for (const item of this.queue.splice(0)) {
      item.reject(new ConductorError(ErrorCode.ShuttingDown, 'the daemon is shutting down and takes no more changes'));
    }
    await this.chain;
    await this.options.controller.stop();
  }
}
