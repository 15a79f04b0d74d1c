/**
 * The stream definitions this host owns, behind one small interface; the file store
 * (file-store.ts) implements it. Fleet mode does not plug in here: the fleet keeps the shared set
 * in etcd itself (fleet/) and drives this host's local service, whose file store keeps what the
 * host applied so that it can serve without etcd.
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
