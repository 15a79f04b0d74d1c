/**
 * One batch from admission to answers: as many of its changes brought live as nginx takes, all
 * in one reload when it can, the ones nginx blames refused with its message, one at a time when
 * it refuses without saying why. A group (a declarative apply) is all or nothing. A live stream
 * nginx no longer takes is set aside so that it does not block every other change of its master.
 */
import { performance } from 'node:perf_hooks';
import { ConductorError, describeBackends, ErrorCode, formatPorts } from '@stream-conductor/shared';
import type { SessionSpan } from '../../sys/sessions.js';
import { withoutPaths } from '../binary.js';
import { quitOldWorkers } from '../process/controller.js';
import { admit, consistent } from './admission.js';
import type { InstanceState } from './state.js';
import { attempt } from './transaction.js';
import type { Accepted, Pending } from './types.js';

export class BatchApplier {
  constructor(
    private readonly state: InstanceState,
    /** Told when a stream was set aside, so that it is tried again later. */
    private readonly onSetAside: () => void,
  ) {}

  /** Admits, applies and answers one batch, and reports it to the observer and the log. */
  async applyBatch(batch: Pending[]): Promise<void> {
    const { options, log } = this.state;
    const started = performance.now();
    const accepted = await admit(this.state, batch);
    let outcome = { applied: 0, attempts: 0 };
    if (accepted.length > 0 && !(await options.controller.isRunning())) {
      const reason = options.controller.status().message;
      const error = new ConductorError(
        ErrorCode.NginxUnavailable,
        `nginx is not running${reason ? `: ${withoutPaths(reason)}` : ''}`,
        {
          hint: 'the daemon keeps trying to start it; `conductor status` shows why it is down',
        },
      );
      for (const { item } of accepted) item.reject(error);
    } else if (batch[0]?.mutation.kind === 'group') {
      outcome = await this.applyGroup(batch[0], accepted);
    } else {
      outcome = await this.applyAccepted(accepted);
    }
    const ms = performance.now() - started;
    options.observer?.apply(options.id, ms / 1000, outcome.applied, batch.length - outcome.applied);
    log.info('apply', {
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
    let result = await attempt(this.state, accepted);
    let attempts = 1;
    if (result.kind === 'culprits' && result.culprits.size === 0) {
      // Only streams outside the group were refused: they are set aside, the group goes on.
      for (const [port, reason] of result.bystanders) await this.setAside(port, reason);
      result = await attempt(this.state, accepted);
      attempts = 2;
      if (result.kind !== 'ok') await this.reloadSetAside(); // nginx still drops what was set aside
    }
    if (result.kind === 'ok') {
      item.resolve({ warnings: result.warnings, change: 'applied' });
      return { applied: 1, attempts };
    }
    const refusal = result.kind === 'all' ? result.error : result.culprits.values().next().value;
    item.reject(refusal ?? new ConductorError(ErrorCode.NginxRejected, 'nginx refused the change'));
    return { applied: 0, attempts };
  }

  /**
   * Brings as many of `accepted` live as nginx takes: all in one reload when it can, the ones
   * nginx blames refused with its message, one at a time when it refuses without saying why.
   */
  async applyAccepted(initial: Accepted[]): Promise<{ applied: number; attempts: number }> {
    let accepted = initial;
    let attempts = 0;
    let applied = 0;
    /** Streams were set aside and no reload has taken their files' new state since. */
    let setAsideSince = false;
    while (accepted.length > 0) {
      attempts += 1;
      const result = await attempt(this.state, accepted);
      if (result.kind === 'ok') {
        await this.answer(accepted, result.warnings);
        applied += accepted.length;
        if (accepted.length > 0) setAsideSince = false;
        break;
      }
      if (result.kind === 'culprits') {
        // A live stream nginx no longer takes is set aside, as at start-up, so that it does not
        // block every other change of this master; the retry brings it back once it can serve.
        for (const [port, reason] of result.bystanders) await this.setAside(port, reason);
        if (result.bystanders.size > 0) setAsideSince = true;
        accepted = consistent(
          this.state.entries,
          accepted.filter(({ item, port, next }) => {
            const error = next ? result.culprits.get(port) : undefined;
            if (error) item.reject(error);
            return error === undefined;
          }),
        );
        continue;
      }
      const global = result.error.code === ErrorCode.NginxUnavailable || result.error.code === ErrorCode.StorageFailed;
      if (accepted.length === 1 || global) {
        for (const { item } of accepted) item.reject(result.error);
        break;
      }
      // nginx refused the batch without naming a culprit: find it by applying one at a time.
      const one = await this.oneByOne(accepted, result.error);
      applied += one.applied;
      attempts += one.attempts;
      break;
    }
    // Every change of the batch was refused, but streams were set aside: nginx must drop them too,
    // or it would go on serving what the listing calls failed.
    if (setAsideSince) await this.reloadSetAside();
    return { applied, attempts };
  }

  /** Each change alone, to find the one nginx refused (it named none). */
  private async oneByOne(
    accepted: Accepted[],
    refusal: ConductorError,
  ): Promise<{ applied: number; attempts: number }> {
    let applied = 0;
    let attempts = 0;
    for (const one of accepted) {
      const single = await attempt(this.state, consistent(this.state.entries, [one]));
      attempts += 1;
      if (single.kind === 'ok') {
        await this.answer([one], single.warnings);
        applied += 1;
      } else {
        one.item.reject(single.kind === 'all' ? single.error : (single.culprits.values().next().value ?? refusal));
      }
    }
    return { applied, attempts };
  }

  /** Answers the changes that went live (a remove asked to, with its sessions cut first). */
  private async answer(done: Accepted[], warnings: string[]): Promise<void> {
    for (const one of done) {
      const { mutation } = one.item;
      if (mutation.kind === 'remove' && mutation.killSessions)
        await this.cutSessions(
          {
            port: one.port,
            portEnd: one.previous?.record.portEnd,
            listenAddress: one.previous && this.state.listenAddressOf(one.previous.record),
          },
          warnings,
        );
      one.item.resolve({ warnings, change: one.change, ...(one.next ? { entry: { ...one.next } } : {}) });
    }
  }

  /** A reload that only drops set-aside streams (their files are gone already). */
  private async reloadSetAside(): Promise<void> {
    const outcome = await this.state.reload();
    if (!outcome.ok) {
      this.state.log.error('nginx did not take the configuration without the set-aside streams', {
        reason: outcome.message,
      });
      return;
    }
    await quitOldWorkers(outcome.previousWorkers ?? []);
  }

  /**
   * Takes a live stream out of nginx's files (the next reload drops it) and marks it failed with
   * nginx's reason; its definition stays, and the retry tries it again.
   */
  private async setAside(port: number, reason: string): Promise<void> {
    const { state } = this;
    const entry = state.entries.get(port);
    if (entry?.state !== 'live') return;
    await state.options.files.apply([], [port]);
    state.entries.set(port, { record: entry.record, state: 'failed', reason });
    state.log.warn('stream set aside: nginx no longer takes it', {
      port,
      backends: describeBackends(entry.record.backends),
      reason,
    });
    state.options.observer?.finding?.(state.id, 'set-aside', [port], reason);
    this.onSetAside();
  }

  /** Cuts the sessions nginx keeps alive on its old workers after a remove (every port of a range). */
  private async cutSessions(span: SessionSpan, warnings: string[]): Promise<void> {
    const { options, log } = this.state;
    if (!options.killSessions) {
      warnings.push('cutting established sessions is not available on this host');
      return;
    }
    try {
      const cut = await options.killSessions(span);
      log.info('sessions cut', { ports: formatPorts(span), sessions: cut });
    } catch (error) {
      warnings.push(
        `the established sessions of port${span.portEnd === undefined ? '' : 's'} ${formatPorts(span)} could not be cut: ${(error as Error).message}`,
      );
    }
  }
}
