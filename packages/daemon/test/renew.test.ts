/**
 * Renewing a stream's lifetime changes only its lifetime: a change to the definition admitted
 * before the renewal (a TLS renewal, another caller's replace) is kept, and the renewal applies to it.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { ConductorError, ErrorCode, sameSpec } from '@stream-conductor/shared';
import type { Mutation, MutationResult } from '../src/nginx/instance.js';
import type { Conductor } from '../src/service/local.js';
import { FakeInstance, MemoryStore, record, startLocalService } from './service-fakes.js';

/** An instance that honours a put's condition (ifSpec) as the pipeline's admission does. */
class ConditionalInstance extends FakeInstance {
  /** Runs once, just before the next conditional put is judged: another change that got there first. */
  before: (() => void) | undefined;

  override async submit(mutation: Mutation): Promise<MutationResult> {
    if (mutation.kind === 'put' && mutation.ifSpec !== undefined) {
      this.before?.();
      this.before = undefined;
      const now = this.entries.get(mutation.record.port);
      if (now === undefined || !sameSpec(now.record, mutation.ifSpec)) {
        this.submitted.push(mutation);
        throw new ConductorError(ErrorCode.Conflict, `stream ${mutation.record.port} changed meanwhile`);
      }
    }
    return super.submit(mutation);
  }
}

let folder: string;
beforeAll(async () => {
  folder = await mkdtemp(join(tmpdir(), 'sc-renew-'));
});
afterAll(async () => {
  await rm(folder, { recursive: true, force: true });
});
const services: Conductor[] = [];
afterEach(async () => {
  for (const service of services.splice(0)) await service.close();
});

async function setup(): Promise<{ instance: ConditionalInstance; service: Conductor }> {
  const instance = new ConditionalInstance(0);
  const service = await startLocalService({
    instances: [instance],
    store: new MemoryStore([record(9000)]),
    portRange: { start: 9000, end: 9009 },
    legacyFolder: folder,
  });
  services.push(service);
  return { instance, service };
}

describe('renew', () => {
  it('keeps a change admitted before it, and renews the definition that change left', async () => {
    const { instance, service } = await setup();
    instance.before = () => {
      instance.entries.set(9000, { record: record(9000, '10.0.0.2:22'), state: 'live' });
    };
    await service.renew(9000, '2026-12-31T00:00:00.000Z');
    const now = instance.entries.get(9000)?.record;
    expect(now?.backends).toEqual([{ address: '10.0.0.2:22' }]);
    expect(now?.expiresAt).toBe('2026-12-31T00:00:00.000Z');
    // The first try was refused on its condition, the second held.
    const puts = instance.submitted.filter((one) => one.kind === 'put');
    expect(puts).toHaveLength(2);
  });

  it('a conflict that is not a race (the definition is unchanged) is not retried', async () => {
    const { instance, service } = await setup();
    const submit = instance.submit.bind(instance);
    instance.submit = async (mutation) => {
      if (mutation.kind === 'put') throw new ConductorError(ErrorCode.Conflict, 'refused for another reason');
      return submit(mutation);
    };
    await expect(service.renew(9000, '2026-12-31T00:00:00.000Z')).rejects.toMatchObject({
      code: ErrorCode.Conflict,
      message: 'refused for another reason',
    });
  });
});
