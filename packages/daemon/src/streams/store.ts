/**
 * The stream definitions the daemon owns, behind one small interface. The local file store is the
 * embedded default; a shared store (etcd) for several edge hosts plugs in here.
 */
import type { StreamRecord } from '@stream-conductor/shared';

export interface StoreChange {
  put: StreamRecord[];
  remove: number[];
}

export interface StoreLoad {
  records: StreamRecord[];
  /** Entries the store holds but that are not valid definitions, with the reason. */
  problems: string[];
}

export interface StreamStore {
  /** Every definition the daemon owns. */
  load(): Promise<StoreLoad>;
  /** Records `put` and drops `remove` in one atomic step; resolves once the change is durable. */
  commit(change: StoreChange): Promise<void>;
}
