import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { parseStreamInput, type StreamRecord, simpleSpec } from '@stream-conductor/shared';
import { planChange } from '../src/nginx/pipeline/transaction.js';
import type { Accepted, Entry } from '../src/nginx/pipeline/types.js';
import { renderStreamFile } from '../src/nginx/render.js';
import { checkStreamSet } from '../src/service/apply.js';
import type { Conductor } from '../src/service/local.js';
import {
  CREATED_AT,
  FakeInstance,
  fakeProbe,
  MemoryStore,
  record as singleRecord,
  startLocalService,
} from './service-fakes.js';

const now = new Date('2026-01-01T00:00:00Z');
const record = (input: Record<string, unknown>): StreamRecord => ({
  ...parseStreamInput(input, { now }),
  createdAt: '2026-01-01T00:00:00.000Z',
});
const options = { listenAddress: '127.0.0.1' };

describe('rendering a range', () => {
  it('one server per port, each to the same port of the backend', () => {
    const text = renderStreamFile(record({ port: '30000-30002', backend: '10.0.0.1' }), options);
    expect(text.match(/^server \{$/gm)).toHaveLength(3);
    for (const port of [30000, 30001, 30002]) {
      expect(text).toContain(`    listen 127.0.0.1:${port};`);
      expect(text).toContain(`    proxy_pass 10.0.0.1:${port};`);
    }
    // The bundle finds a stream's part by its first line: the first port alone.
    expect(text.startsWith('# stream-conductor: port 30000 -> 10.0.0.1:30000')).toBe(true);
  });

  it('an offset shifts every backend port; several backends get an upstream per port', () => {
    const text = renderStreamFile(
      record({ port: '30000-30001', backends: ['a.internal:40000', 'b.internal'], balance: 'least-conn' }),
      options,
    );
    expect(text).toContain(
      'upstream conductor_30001 {\n    least_conn;\n    server a.internal:40001;\n    server b.internal:30001;\n}',
    );
    expect(text).toContain('    proxy_pass conductor_30000;');
    expect(text).toContain('    proxy_pass conductor_30001;');
  });

  it('limits hold for each port: zones named for the range, the per-client key with the port', () => {
    const text = renderStreamFile(
      record({ port: '30000-30001', backend: 'h', maxConnections: 5, maxConnectionsPerClient: 2, protocol: 'tcp+udp' }),
      options,
    );
    expect(text.match(/^limit_conn_zone /gm)).toHaveLength(2);
    expect(text).toContain('limit_conn_zone $server_port zone=conductor_30000_30001_sessions:1m;');
    expect(text).toContain('limit_conn_zone $binary_remote_addr$server_port zone=conductor_30000_30001_clients:1m;');
    expect(text.match(/limit_conn conductor_30000_30001_sessions 5;/g)).toHaveLength(2);
    expect(text).toContain('    listen 127.0.0.1:30001 udp;');
  });
});

describe('planning a change of a range', () => {
  const entry = (input: Record<string, unknown>): Entry => ({ record: record(input), state: 'live' });
  const change = (port: number, next: Entry | undefined): Accepted =>
    ({ port, next, change: next ? 'created' : 'removed' }) as unknown as Accepted;

  it('opens and closes every port of the range, and changes in place the ones it keeps', () => {
    const created = planChange(new Map(), [change(100, entry({ port: '100-103', backend: 'h' }))]);
    expect(created.opened.tcp).toEqual([100, 101, 102, 103]);
    const live = new Map([[100, entry({ port: '100-103', backend: 'h' })]]);
    expect(planChange(live, [change(100, undefined)]).closed.tcp).toEqual([100, 101, 102, 103]);
    const narrowed = planChange(live, [change(100, entry({ port: '100-101', backend: 'g' }))]);
    expect(narrowed.closed.tcp).toEqual([102, 103]);
    expect(narrowed.inPlace.tcp).toEqual([100, 101]);
    expect(narrowed.opened.tcp).toEqual([]);
  });
});

describe('checkStreamSet with ranges', () => {
  it('refuses a set where a stream falls inside a range of the set, naming the port', () => {
    const range = parseStreamInput({ port: '9000-9010', backend: 'h' }, { now });
    expect(() => checkStreamSet([range, simpleSpec(9005, 'h:1')], () => undefined)).toThrow(
      'port 9005 appears twice in the set (in 9000-9010 and 9005)',
    );
    expect(() => checkStreamSet([range, simpleSpec(9011, 'h:1')], () => undefined)).not.toThrow();
  });
});

describe("the service's free-port search and a range's ports", () => {
  // Every port looks free to the host probe here, so only the service's own `taken` can skip a
  // range's ports (on a real host nginx's sockets would hide the bug from free-port).
  const range = (first: number, last: number): StreamRecord => ({
    ...simpleSpec(first, `10.0.0.1:${first}`),
    portEnd: last,
    createdAt: CREATED_AT,
  });
  let folder: string;
  const services: Conductor[] = [];
  beforeAll(async () => {
    folder = await mkdtemp(join(tmpdir(), 'sc-range-free-'));
  });
  afterAll(async () => {
    for (const service of services.splice(0)) await service.close();
    await rm(folder, { recursive: true, force: true });
  });
  const start = async (records: StreamRecord[]): Promise<Conductor> => {
    const service = await startLocalService({
      instances: [new FakeInstance(0)],
      store: new MemoryStore(records),
      portRange: { start: 9000, end: 9009 },
      legacyFolder: folder,
      probe: fakeProbe().probe,
    });
    services.push(service);
    return service;
  };

  it("never answers a port inside a live range, nor a parked range's ports", async () => {
    // 9000-9002 is served; 9004-9012 reaches past PORT_RANGE, so it is parked (failed), not served.
    const service = await start([range(9000, 9002), range(9004, 9012)]);
    expect(service.get(9004)?.state).toBe('failed');
    expect(await service.freePort()).toBe(9003);
  });

  it('answers none when ranges and streams take every port', async () => {
    const service = await start([range(9000, 9002), singleRecord(9003), range(9004, 9012)]);
    expect(await service.freePort()).toBeUndefined();
  });
});
