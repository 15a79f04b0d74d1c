/**
 * The etcd client of a fleet host and its configuration (members, TLS, auth, timeouts, the
 * circuit breaker), how etcd's failures are told to people, and the small store interface the
 * write protocol uses (so that it can be tested against an in-memory store).
 */

import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConductorError, ErrorCode } from '@stream-conductor/shared';
import { ConsecutiveBreaker, circuitBreaker, handleWhen, isBrokenCircuitError, retry } from 'cockatiel';
import { Etcd3, type IKeyValue, isRecoverableError } from 'etcd3';
import type { StoreConfig } from '../config/etcd.js';
import type { StoredKey } from './keys.js';

export type EtcdConfig = Extract<StoreConfig, { kind: 'etcd' }>;

/** etcd's calls are bounded: an unreachable cluster is a refusal within seconds, not a hang. */
export const CALL_TIMEOUT_MS = 5000;
/** How long a member that failed three calls in a row is skipped. */
export const HALF_OPEN_MS = 1000;

export function createEtcdClient(config: EtcdConfig): Etcd3 {
  return new Etcd3({
    hosts: config.endpoints,
    dialTimeout: 3000,
    // Each call tries the next member once when one fails (a leader lost, a member down); a
    // member that failed three times in a row is skipped for a second. The daemon's own
    // supervision resyncs when etcd answers again.
    faultHandling: {
      host: () =>
        circuitBreaker(handleWhen(isRecoverableError), {
          halfOpenAfter: HALF_OPEN_MS,
          breaker: new ConsecutiveBreaker(3),
        }),
      global: retry(handleWhen(isRecoverableError), { maxAttempts: Math.max(2, config.endpoints.length) }),
    },
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + CALL_TIMEOUT_MS }),
    ...(config.tls
      ? {
          credentials: {
            rootCertificate: readFileSync(config.tls.ca),
            ...(config.tls.cert !== undefined && config.tls.key !== undefined
              ? { certChain: readFileSync(config.tls.cert), privateKey: readFileSync(config.tls.key) }
              : {}),
          },
        }
      : {}),
    ...(config.auth ? { auth: { username: config.auth.user, password: config.auth.password } } : {}),
  });
}

/** An error's first line, as logs and answers show it. */
export function message(error: unknown): string {
  if (error instanceof ConductorError) return error.message;
  const text = (error as Error).message ?? String(error);
  // The client's fault handling skips members that failed just before: say what it means.
  if (/circuit breaker is open/i.test(text)) return 'no etcd member answers';
  return text.split('\n')[0] ?? text;
}

export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** etcd's failure, as the API answers it. */
export function storeError(error: unknown): ConductorError {
  if (error instanceof ConductorError) return error;
  const text = message(error);
  if (/too many operations/i.test(text)) {
    return new ConductorError(
      ErrorCode.InvalidInput,
      'the change holds more streams than etcd takes in one transaction',
      {
        hint: "raise etcd's --max-txn-ops (128 by default), or apply in smaller sets",
      },
    );
  }
  // One failed call is not a lost store (the next may reach another member); the supervision's
  // look every second decides that.
  return new ConductorError(ErrorCode.StoreUnavailable, `the fleet's store (etcd) did not take the change: ${text}`, {
    hint: 'nothing was changed unless `conductor ls` shows it; try again',
  });
}

/**
 * Runs a call of a write, answering etcd's failure as `storeError`. A member that failed just
 * before (as calls do for a moment after etcd comes back) is skipped for a second, and the call
 * never left: while this host is `connected`, it is tried once more after that second rather
 * than refused.
 */
export async function storeCall<T>(connected: () => boolean, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (
      !connected() ||
      !(isBrokenCircuitError(error) || /circuit breaker is open/i.test(String((error as Error)?.message)))
    )
      throw storeError(error);
  }
  await sleep(HALF_OPEN_MS + 100);
  try {
    return await call();
  } catch (error) {
    throw storeError(error);
  }
}

/** A condition of a transaction: the key is at this mod revision, or does not exist. */
export type Compare = { key: string; modRevision: string } | { key: string; absent: true };
/** A step of a transaction: a put (lease '0': none) or a delete. */
export type Step = { put: string; value: string; lease: string } | { delete: string };

/** What the write protocol asks of etcd. */
export interface FleetStore {
  /** One key now, and the revision of the read. */
  get(key: string): Promise<{ kv: StoredKey | undefined; revision: string }>;
  /** Every key under `prefix` now, and the revision of the read. */
  getPrefix(prefix: string): Promise<{ kvs: StoredKey[]; revision: string }>;
  /** The steps if every compare holds; the revision after it (or of the read, when it did not). */
  txn(compares: Compare[], steps: Step[]): Promise<{ succeeded: boolean; revision: string }>;
  /** A lease of `seconds` that is not kept alive; answers its id. */
  grantLease(seconds: number): Promise<string>;
  revokeLease(id: string): Promise<void>;
}

export function storedKey(kv: IKeyValue): StoredKey {
  return {
    key: kv.key.toString('utf8'),
    value: kv.value.toString('utf8'),
    modRevision: kv.mod_revision,
    lease: kv.lease,
  };
}

/** The FleetStore of a real etcd. */
export class EtcdStore implements FleetStore {
  constructor(private readonly client: Etcd3) {}

  async get(key: string): Promise<{ kv: StoredKey | undefined; revision: string }> {
    const response = await this.client.get(key).exec();
    const kv = response.kvs[0];
    return { kv: kv ? storedKey(kv) : undefined, revision: response.header.revision };
  }

  async getPrefix(prefix: string): Promise<{ kvs: StoredKey[]; revision: string }> {
    const response = await this.client.getAll().prefix(prefix).exec();
    return { kvs: response.kvs.map(storedKey), revision: response.header.revision };
  }

  async txn(compares: Compare[], steps: Step[]): Promise<{ succeeded: boolean; revision: string }> {
    let builder: ReturnType<Etcd3['if']> | undefined;
    for (const compare of compares) {
      const [column, value] = 'absent' in compare ? (['Create', 0] as const) : (['Mod', compare.modRevision] as const);
      builder = builder
        ? builder.and(compare.key, column, '==', value)
        : this.client.if(compare.key, column, '==', value);
    }
    if (!builder) throw new Error('a transaction needs a condition');
    const ops = steps.map((step) => {
      if ('delete' in step) return this.client.delete().key(step.delete);
      const put = this.client.put(step.put).value(step.value);
      return step.lease === '0' ? put : put.lease(step.lease);
    });
    const response = await builder.then(...ops).commit();
    return { succeeded: response.succeeded, revision: response.header.revision };
  }

  grantLease(seconds: number): Promise<string> {
    return this.client.lease(seconds, { autoKeepAlive: false }).grant();
  }

  async revokeLease(id: string): Promise<void> {
    await this.client.leaseClient.leaseRevoke({ ID: id });
  }
}
