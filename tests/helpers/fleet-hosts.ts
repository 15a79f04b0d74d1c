/**
 * A fleet on one machine for the e2e suites: a real etcd and daemons in fleet mode, each with its
 * own nginx on its own loopback address (127.0.0.2, .3, ...), sharing one port range (the first
 * `size` ports of a free block) and one key prefix of their own.
 */
import type { Daemon, DaemonOptions } from './daemon.js';
import type { DaemonFixture } from './daemon-fixture.js';
import { EtcdCluster } from './etcd.js';
import { freePortBlock } from './ports.js';

export interface FleetHosts {
  /** The first port of the streams' range. */
  start: number;
  hosts: Daemon[];
  /** Each host's options, to start it again. */
  options: DaemonOptions[];
  /** Each host's listen address, by index. */
  addresses: string[];
}

export async function startFleetHosts(
  daemons: DaemonFixture,
  settings: { name: string; size: number; addresses: string[]; env?: Record<string, string> },
): Promise<FleetHosts> {
  const { name, size, addresses } = settings;
  const etcd = await EtcdCluster.start(await daemons.dir(), 1);
  daemons.beforeRemoving(() => etcd.stop());
  const start = await freePortBlock(size + addresses.length);
  const options = addresses.map(
    (address, i): DaemonOptions => ({
      rangeStart: start,
      rangeSize: size,
      apiPort: start + size + i,
      env: {
        CONDUCTOR_STORE: `etcd://${etcd.endpoints}`,
        CONDUCTOR_ETCD_PREFIX: `/sc-${name}-${start}/`,
        CONDUCTOR_HOST_ID: `host-${i}`,
        CONDUCTOR_LISTEN_ADDRESS: address,
        CONDUCTOR_RETRY_INTERVAL: '1',
        ...settings.env,
      },
    }),
  );
  const hosts: Daemon[] = [];
  for (const each of options) hosts.push(await daemons.start(each));
  return { start, hosts, options, addresses };
}
