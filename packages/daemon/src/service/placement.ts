/**
 * Which nginx master serves each port. A stream stays on the master that took it; a new one goes
 * to the master that can reload soonest (each master pauses about 100 ms after a reload), so that
 * changes arriving together spread over the masters instead of queueing behind one. At start-up a
 * stream stays with the master whose folder holds its file, and the others are spread evenly.
 */
import type { NginxStatus, StreamRecord } from '@stream-conductor/shared';
import type { Entry, Mutation, MutationResult } from '../nginx/instance.js';
import type { StreamFileSet } from '../nginx/stream-files.js';

/** What the service uses of an nginx instance (nginx/instance.ts), so tests can stand in for it. */
export interface ServiceInstance {
  readonly id: number;
  readonly files: Pick<StreamFileSet, 'scan'>;
  load(records: StreamRecord[]): void;
  list(): Entry[];
  get(port: number): Entry | undefined;
  /** How long a change submitted now would wait for this master (ms). */
  expectedWaitMs(now?: number): number;
  submit(mutation: Mutation): Promise<MutationResult>;
  start(): Promise<void>;
  reviveHeldPorts(timeoutMs: number): Promise<void>;
  status(): NginxStatus;
  close(): Promise<void>;
}

/** A port's master, and how many changes to the port are under way (it is kept while any is). */
export interface Slot {
  instance: ServiceInstance;
  inflight: number;
}

/** The instance that can take a new stream soonest; among equals, the one with fewest streams. */
export function soonest(instances: readonly ServiceInstance[], now: number): ServiceInstance {
  let best = instances[0];
  if (!best) throw new Error('no nginx instance to place a stream on');
  let bestWait = Number.POSITIVE_INFINITY;
  let bestCount = Number.POSITIVE_INFINITY;
  for (const instance of instances) {
    const wait = instance.expectedWaitMs(now);
    const count = instance.list().length;
    if (wait < bestWait || (wait === bestWait && count < bestCount)) {
      best = instance;
      bestWait = wait;
      bestCount = count;
    }
  }
  return best;
}

/** Which instance serves each port that has a stream, or a change in flight. */
export class Placement {
  private readonly owners = new Map<number, Slot>();

  constructor(private readonly instances: readonly ServiceInstance[]) {
    if (instances.length === 0) throw new Error('a conductor needs at least one nginx instance');
  }

  ownerOf(port: number): ServiceInstance | undefined {
    return this.owners.get(port)?.instance;
  }

  /** Whether a change to `port` is in flight (a hold not yet released). */
  isHeld(port: number): boolean {
    return (this.owners.get(port)?.inflight ?? 0) > 0;
  }

  /** Holds `port` on its instance (placing it when nothing owns it) until release(). */
  hold(port: number): Slot {
    let slot = this.owners.get(port);
    if (!slot) {
      slot = { instance: soonest(this.instances, Date.now()), inflight: 0 };
      this.owners.set(port, slot);
    }
    slot.inflight += 1;
    return slot;
  }

  /** Ends a hold; a port whose instance has no stream on it after the last hold is free again. */
  release(port: number, slot: Slot): void {
    slot.inflight -= 1;
    if (slot.inflight === 0 && !slot.instance.get(port)) this.owners.delete(port);
  }

  /** Runs `task` on the instance that owns `port` (placing the port when nothing owns it). */
  async onOwner<T>(port: number, task: (instance: ServiceInstance) => Promise<T>): Promise<T> {
    const slot = this.hold(port);
    try {
      return await task(slot.instance);
    } finally {
      this.release(port, slot);
    }
  }

  /**
   * Places the stored streams at start-up: each stays with the instance whose folder holds its
   * file; the others go to the instance with fewest so far. Answers each instance's records.
   */
  async assign(records: Iterable<StreamRecord>): Promise<Map<ServiceInstance, StreamRecord[]>> {
    const byInstance = new Map<ServiceInstance, StreamRecord[]>(this.instances.map((instance) => [instance, []]));
    const found = new Map<number, ServiceInstance>();
    for (const instance of this.instances) {
      for (const port of (await instance.files.scan()).ours) if (!found.has(port)) found.set(port, instance);
    }
    for (const record of records) {
      const instance = found.get(record.port) ?? fewest(byInstance);
      byInstance.get(instance)?.push(record);
      this.owners.set(record.port, { instance, inflight: 0 });
    }
    return byInstance;
  }
}

/** The instance given fewest records so far (the first among equals). */
function fewest(byInstance: Map<ServiceInstance, StreamRecord[]>): ServiceInstance {
  let best: [ServiceInstance, number] | undefined;
  for (const [instance, records] of byInstance)
    if (!best || records.length < best[1]) best = [instance, records.length];
  if (!best) throw new Error('no nginx instance to place a stream on');
  return best[0];
}
