/**
 * The change transaction: one try to bring a set of accepted changes live in one reload. Its
 * steps, in order: plan what each port becomes; write the per-stream files atomically; store the
 * change (at once, or once nginx took it for a stream changed in place); test and reload nginx;
 * prove the result from the kernel (new ports listen, removed ones closed, changed ones no longer
 * held by old workers); commit. Each refusal on the way undoes what was done before it: the
 * files go back to their exact previous bytes, the store forgets the change, and nginx is
 * reloaded back when it had already taken it.
 */
import { performance } from 'node:perf_hooks';
import {
  ConductorError,
  ErrorCode,
  portsOf,
  protocolsOf,
  type StreamRecord,
  sameTraffic,
} from '@stream-conductor/shared';
import type { StoreChange } from '../../streams/store.js';
import type { KernelSocket } from '../../sys/sockets.js';
import { quietOldWorkers, quitOldWorkers, type ReloadOutcome } from '../process/controller.js';
import type { FileSnapshot } from '../stream-files.js';
import { blame } from './blame.js';
import { storageError } from './errors.js';
import { settleSockets } from './settle.js';
import { socketsOf, verifySockets } from './sockets.js';
import type { InstanceState } from './state.js';
import type { Accepted, Attempt, Entry, Ports } from './types.js';

/** What one attempt makes of the touched ports, and what nginx must do about it. */
export interface ChangePlan {
  /** The entries once the change is live. */
  target: Map<number, Entry>;
  touched: number[];
  /** Files to write (live streams of `target`) and to remove (streams that stop being live). */
  write: StreamRecord[];
  remove: number[];
  /** Sockets that open, close, or stay with a new configuration (their sockets pass to the new workers). */
  opened: Ports;
  closed: Ports;
  inPlace: Ports;
  /** Whether nginx must reload at all (a change of store-only fields does not). */
  nginxChanges: boolean;
  /** Whether a live stream keeps listening with a new configuration. */
  changedInPlace: boolean;
}

/** Plans `accepted` over `entries` (pure). */
export function planChange(entries: ReadonlyMap<number, Entry>, accepted: Accepted[]): ChangePlan {
  const target = new Map(entries);
  for (const { port, next } of accepted) {
    if (next) target.set(port, next);
    else target.delete(port);
  }
  const plan: ChangePlan = {
    target,
    touched: [...new Set(accepted.map((one) => one.port))],
    write: [],
    remove: [],
    opened: { tcp: [], udp: [] },
    closed: { tcp: [], udp: [] },
    inPlace: { tcp: [], udp: [] },
    nginxChanges: false,
    changedInPlace: false,
  };
  for (const port of plan.touched) {
    const before = entries.get(port);
    const after = target.get(port);
    const was = before?.state === 'live' ? protocolsOf(before.record) : [];
    const will = after?.state === 'live' ? protocolsOf(after.record) : [];
    // Every port of a range opens, closes or changes, not only the first (its key).
    const wasPorts = before?.state === 'live' ? portsOf(before.record) : [];
    const willPorts = after?.state === 'live' ? portsOf(after.record) : [];
    for (const protocol of ['tcp', 'udp'] as const) {
      const had = new Set(was.includes(protocol) ? wasPorts : []);
      const has = new Set(will.includes(protocol) ? willPorts : []);
      for (const each of has) if (!had.has(each)) plan.opened[protocol].push(each);
      for (const each of had) if (!has.has(each)) plan.closed[protocol].push(each);
    }
    if (after?.state === 'live') {
      plan.write.push(after.record);
      if (before?.state !== 'live' || !sameTraffic(before.record, after.record)) plan.nginxChanges = true;
      if (before?.state === 'live' && !sameTraffic(before.record, after.record)) {
        plan.changedInPlace = true;
        for (const protocol of will)
          if (was.includes(protocol))
            plan.inPlace[protocol].push(...willPorts.filter((each) => wasPorts.includes(each)));
      }
    } else if (before?.state === 'live') {
      plan.remove.push(port);
      plan.nginxChanges = true;
    }
  }
  return plan;
}

const count = (ports: Ports): number => ports.tcp.length + ports.udp.length;

export class ChangeTransaction {
  private readonly plan: ChangePlan;
  private snapshot: FileSnapshot | undefined;
  /** The store write, once started: settles with its error, or undefined when it was written. */
  private stored: Promise<unknown> | undefined;
  private readonly warnings: string[] = [];
  private readonly phases: Record<string, number> = {};
  private mark = performance.now();

  constructor(
    private readonly state: InstanceState,
    private readonly accepted: Accepted[],
  ) {
    this.plan = planChange(state.entries, accepted);
  }

  /** Tries to bring the accepted changes live; on success the state's entries are the new ones. */
  async run(): Promise<Attempt> {
    if (this.accepted.length === 0) return { kind: 'ok', warnings: [] };
    const { files } = this.state.options;
    this.snapshot = await files.snapshot(this.plan.touched);
    try {
      await files.apply(this.plan.write, this.plan.remove);
    } catch (error) {
      await this.restoreFiles();
      return { kind: 'all', error: storageError(error) };
    }
    this.phase('files');
    // Created and removed streams are stored while nginx takes the change: the flush to disk takes
    // as long as a handoff's better part, and the answer waits for both. A change nginx refuses is
    // taken out of the store again before the refusal is answered (see unstore); listings read
    // the instance, never the store. A stream changed in place is stored only once nginx took it:
    // a daemon killed meanwhile must not come back with a definition nginx may refuse in place of
    // one that served.
    if (!this.plan.changedInPlace) void this.store();
    try {
      if (this.plan.nginxChanges) {
        const refused = await this.applyToNginx();
        if (refused) return refused;
      }
    } catch (error) {
      await this.unstore(); // not answered as done, so not kept
      throw error;
    }
    return this.commit();
  }

  private phase(name: string): void {
    const at = performance.now();
    this.phases[name] = Math.round((at - this.mark) * 10) / 10;
    this.mark = at;
  }

  /** Test (when asked), reload, and prove the result; a refusal once everything is undone, else undefined. */
  private async applyToNginx(): Promise<Attempt | undefined> {
    const { options } = this.state;
    // A managed nginx parses the whole configuration on reload and keeps the running one when it
    // fails, with the reason in its error log: the reload is the test. An external nginx is
    // tested first, since its error log may be out of reach.
    if (options.testBeforeReload ?? options.controller.mode === 'external') {
      const test = await options.controller.test();
      this.phase('test');
      if (!test.ok) {
        await this.restoreFiles();
        await this.unstore();
        return this.blame({ lines: test.lines, message: test.message, code: ErrorCode.NginxRejected });
      }
    }
    const closing = count(this.plan.closed) > 0;
    const sockets = await this.socketsBefore(closing);
    if ('refused' in sockets) return sockets.refused;
    const reload = await this.state.reload({ urgent: closing || this.plan.changedInPlace });
    this.phase('reload');
    if (!reload.ok) return this.refusedReload(reload);
    // New workers prove the master parsed everything and bound every listening socket of its
    // configuration. Only an external nginx might not include our folder at all: ask the kernel.
    if (options.controller.mode === 'external') {
      const refused = await this.verifyListening();
      if (refused) return refused;
    }
    // Removed ports close, and changed ones stop reaching the old backend, once no process of an
    // earlier generation holds their sockets: proven from the kernel, not from signals.
    if (closing || this.plan.changedInPlace) {
      await this.settleOld(reload, sockets.closing, sockets.changed);
      this.phase('drain');
    }
    return undefined;
  }

  /**
   * The kernel's sockets for what closes or changes, taken before nginx lets go of them: the
   * answer waits until the kernel shows them closed, or held by new workers only. Without them
   * the answer could not be proven: refused, with the files as they were.
   */
  private async socketsBefore(
    closing: boolean,
  ): Promise<{ closing: KernelSocket[]; changed: KernelSocket[] } | { refused: Attempt }> {
    try {
      return {
        closing: closing ? socketsOf(this.state, this.plan.closed, this.state.entries) : [],
        changed: this.plan.changedInPlace ? socketsOf(this.state, this.plan.inPlace, this.state.entries) : [],
      };
    } catch (error) {
      await this.restoreFiles();
      await this.unstore();
      this.state.log.error("could not read the kernel's sockets before a change", { error });
      const refusal = new ConductorError(
        ErrorCode.Internal,
        "the kernel's sockets could not be read; nothing was changed",
        { cause: error },
      );
      return { refused: { kind: 'all', error: refusal } };
    }
  }

  /** nginx did not take the change: files back, store back, nginx back in line; blame from its lines. */
  private async refusedReload(reload: ReloadOutcome): Promise<Attempt> {
    await this.restoreFiles();
    await this.unstore();
    await this.resync(reload);
    const code =
      reload.code === 'NGINX_UNAVAILABLE'
        ? ErrorCode.NginxUnavailable
        : reload.lines.some((line) => /bind\(\)/.test(line.text))
          ? ErrorCode.ReloadFailed
          : ErrorCode.NginxRejected;
    return this.blame({ lines: reload.lines, message: reload.message, code });
  }

  /** An external nginx reloaded: refused (and reverted) when a new port does not listen. */
  private async verifyListening(): Promise<Attempt | undefined> {
    const sockets = await verifySockets(this.state, this.plan.opened, { tcp: [], udp: [] });
    this.phase('verify');
    if (sockets.missing.length === 0) return undefined;
    await this.revert();
    await this.unstore();
    return {
      kind: 'all',
      error: new ConductorError(
        ErrorCode.ReloadFailed,
        `nginx reloaded but nothing listens on port ${sockets.missing.join(', ')}`,
        {
          hint: "is STREAM_CONFIG_PATH included inside nginx's stream {} block?",
        },
      ),
    };
  }

  /** Tells the old workers to quit and waits until the kernel agrees; what it cannot prove goes into the warnings. */
  private async settleOld(
    reload: ReloadOutcome,
    closingSockets: KernelSocket[],
    changedSockets: KernelSocket[],
  ): Promise<void> {
    const { options, log } = this.state;
    const { closed, inPlace } = this.plan;
    const previous = reload.previousWorkers ?? [];
    await quitOldWorkers(previous);
    // nginx has taken the change: a failure to check it is said in the answer, not thrown.
    const lingering = await settleSockets({
      closing: closingSockets,
      changed: changedSockets,
      old: () => options.controller.oldProcesses(previous),
      timeoutMs: options.verifyTimeoutMs ?? 3000,
      log,
    }).catch((error: unknown) => {
      log.error("could not check the kernel's sockets after a change", { error });
      return [...closed.tcp, ...closed.udp, ...inPlace.tcp, ...inPlace.udp];
    });
    if (lingering.length > 0) {
      log.error('a port still served by an old nginx process after the change', { ports: lingering });
      this.warnings.push(
        `port ${lingering.join(', ')} may still take connections: an old nginx process did not let go of it (the audit keeps trying)`,
      );
    }
  }

  /** The store holds the change: the state takes it. When the store fails, nginx and the files go back. */
  private async commit(): Promise<Attempt> {
    const storeError = await this.store();
    if (storeError !== undefined) {
      if (this.plan.nginxChanges) await this.revert();
      else await this.restoreFiles();
      return { kind: 'all', error: storageError(storeError) };
    }
    this.phase('store');
    this.state.entries = this.plan.target;
    this.state.log.debug('attempt', { ports: this.plan.touched.length, ...this.phases });
    return { kind: 'ok', warnings: this.warnings };
  }

  private blame(refusal: Parameters<typeof blame>[0]): Attempt {
    return blame(refusal, this.accepted, this.state.entries, this.state.options.files);
  }

  /** What the store holds for the touched ports when `entries` is the state. */
  private storeChange(entries: Map<number, Entry>): StoreChange {
    const { touched } = this.plan;
    return {
      put: touched.flatMap((port) => {
        const entry = entries.get(port);
        return entry ? [entry.record] : [];
      }),
      remove: touched.filter((port) => !entries.has(port)),
    };
  }

  /** Stores the change once; settles with the store's error, or undefined once written. */
  private store(): Promise<unknown> {
    this.stored ??= this.state.options.store.commit(this.storeChange(this.plan.target)).then(
      () => undefined,
      (error: unknown) => error ?? new Error('the store write failed'),
    );
    return this.stored;
  }

  /** Rollback: takes a stored change out of the store again (nothing when it was never written). */
  private async unstore(): Promise<void> {
    if (this.stored === undefined || (await this.stored) !== undefined) return; // never written
    try {
      await this.state.options.store.commit(this.storeChange(this.state.entries));
    } catch (error) {
      this.state.log.error('could not take a refused change out of the store; the next start applies it', {
        error,
        ports: this.plan.touched,
      });
    }
  }

  /** Rollback: the touched files back to their exact previous bytes. */
  private async restoreFiles(): Promise<void> {
    if (this.snapshot === undefined) return;
    try {
      await this.state.options.files.restore(this.snapshot);
    } catch (error) {
      this.state.log.error('could not restore the previous stream files', { error });
    }
  }

  /**
   * Rollback after nginx had already taken the change: the files back and a reload; returns only
   * once the workers of the refused configuration stopped taking connections.
   */
  private async revert(): Promise<void> {
    const { log, options } = this.state;
    await this.restoreFiles();
    const outcome = await this.state.reload();
    if (!outcome.ok) {
      log.error('could not reload nginx back to the previous configuration', { reason: outcome.message });
      return;
    }
    if (!(await quietOldWorkers(outcome.previousWorkers ?? [], options.verifyTimeoutMs ?? 3000))) {
      log.error('the workers of the refused configuration were slow to stop');
    }
  }

  /**
   * After a failed reload the files are back as they were. nginx is too when it said why it gave
   * up; when the outcome is unknown (a timeout), one more reload brings it in line with the files.
   */
  private async resync(outcome: ReloadOutcome): Promise<void> {
    if (outcome.code !== 'RELOAD_FAILED' || outcome.lines.some((line) => line.level === 'emerg')) return;
    const again = await this.state.reload();
    if (!again.ok)
      this.state.log.error('nginx did not take the previous configuration back', { reason: again.message });
  }
}

/** Tries to bring `accepted` live in one reload (see ChangeTransaction). */
export function attempt(state: InstanceState, accepted: Accepted[]): Promise<Attempt> {
  return new ChangeTransaction(state, accepted).run();
}
