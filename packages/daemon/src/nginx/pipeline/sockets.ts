/** The kernel's view of a change: the sockets it closes or changes, and whether its ports listen as they should. */
import { setTimeout as sleep } from 'node:timers/promises';
import { canonicalAddress, type KernelSocket, kernelSockets } from '../../sys/sockets.js';
import { coverOf } from './ranges.js';
import type { InstanceState } from './state.js';
import type { Entry, Ports } from './types.js';

/** The kernel's sockets our nginx holds now for `ports`, as `entries` defines them (port, protocol, address). */
export function socketsOf(state: InstanceState, ports: Ports, entries: Map<number, Entry>): KernelSocket[] {
  const wanted = new Map<string, string>();
  const cover = coverOf(entries);
  for (const protocol of ['tcp', 'udp'] as const) {
    for (const port of ports[protocol]) {
      const entry = cover.get(port);
      if (entry) wanted.set(`${protocol}:${port}`, canonicalAddress(state.listenAddressOf(entry.record) ?? '0.0.0.0'));
    }
  }
  if (wanted.size === 0) return [];
  const sockets = kernelSockets();
  const found = sockets.filter((socket) => wanted.get(`${socket.protocol}:${socket.port}`) === socket.address);
  // A live port whose socket no address matched (an address written another way): its port and
  // protocol alone, rather than no proof at all.
  const matched = new Set(found.map((socket) => `${socket.protocol}:${socket.port}`));
  const unmatched = [...wanted.keys()].filter((key) => !matched.has(key));
  if (unmatched.length > 0)
    state.log.warn('no kernel socket matched the listen address of a live stream; matching its port alone', {
      ports: unmatched,
    });
  return [...found, ...sockets.filter((socket) => unmatched.includes(`${socket.protocol}:${socket.port}`))];
}

/** Waits until the kernel shows the new ports listening and the removed ones closed. */
export async function verifySockets(
  state: InstanceState,
  opened: Ports,
  closed: Ports,
): Promise<{ missing: number[]; lingering: number[] }> {
  const count = opened.tcp.length + opened.udp.length + closed.tcp.length + closed.udp.length;
  if (count === 0) return { missing: [], lingering: [] };
  const deadline = Date.now() + (state.options.verifyTimeoutMs ?? 3000);
  for (let round = 0; ; round += 1) {
    const listening = await state.options.listeningPorts();
    const missing = [
      ...opened.tcp.filter((port) => !listening.tcp.has(port)),
      ...opened.udp.filter((port) => !listening.udp.has(port)),
    ];
    const lingering = [
      ...closed.tcp.filter((port) => listening.tcp.has(port)),
      ...closed.udp.filter((port) => listening.udp.has(port)),
    ];
    if ((missing.length === 0 && lingering.length === 0) || Date.now() > deadline) {
      return { missing: [...new Set(missing)], lingering: [...new Set(lingering)] };
    }
    await sleep(round < 20 ? 2 : 10);
  }
}
