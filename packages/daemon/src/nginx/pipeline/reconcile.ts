/**
 * Reconcile: makes the files and nginx match the definitions, at start-up and after nginx died.
 * Every definition is tried, also those set aside before; what nginx cannot take is set aside
 * again with the reason, and the rest is served.
 */
import { ConductorError, describeBackends, ErrorCode, portsOf, protocolsOf } from '@stream-conductor/shared';
import { type PortProbe, probeReason } from '../../sys/ports.js';
import { withoutPaths } from '../binary.js';
import type { ReloadOutcome } from '../process/controller.js';
import { blamedAtStart } from './blame.js';
import { probeEach } from './ranges.js';
import { verifySockets } from './sockets.js';
import type { InstanceState } from './state.js';
import type { Entry, Ports } from './types.js';

/** Marks a definition failed with `reason` and takes its file out (the start does not serve it). */
async function setAside(state: InstanceState, port: number, reason: string): Promise<void> {
  const entry = state.entries.get(port);
  if (!entry) return;
  entry.state = 'failed';
  entry.reason = reason;
  await state.options.files.apply([], [port]);
  state.log.warn('stream set aside', { port, backends: describeBackends(entry.record.backends), reason });
}

/** When no master runs, nothing of ours listens: a port that cannot be bound is someone else's. */
async function setAsideHeldPorts(state: InstanceState): Promise<void> {
  const { controller, probePort } = state.options;
  for (const entry of state.entries.values()) {
    const probeNow = async (): Promise<PortProbe> =>
      (
        await probeEach(entry.record, (port) =>
          probePort(port, protocolsOf(entry.record), state.listenAddressOf(entry.record)),
        )
      ).probe;
    let probe = await probeNow();
    if (probe === 'in-use') {
      // A worker the dead master forked just before it died still had its master's title at
      // the first look (so it passed for a master): it is ours, and goes now.
      await controller.clearLeftovers();
      probe = await probeNow();
    }
    if (probe !== 'free') await setAside(state, entry.record.port, probeReason(probe));
  }
}

/**
 * Tests and starts nginx; each time it refuses, the streams its lines name are set aside and it
 * is tried again. Throws when it refuses without naming a stream.
 */
async function startSettingAside(state: InstanceState): Promise<void> {
  const { controller, files } = state.options;
  for (let round = 0; round <= state.entries.size; round += 1) {
    const test = await controller.test();
    let outcome: ReloadOutcome | undefined;
    let lines = test.lines;
    if (test.ok) {
      outcome = await controller.start();
      if (outcome.ok) break;
      lines = outcome.lines;
    }
    const blamed = blamedAtStart(lines, state.entries, files);
    if (blamed.size === 0) {
      const reason = withoutPaths(test.ok ? (outcome?.message ?? 'nginx did not start') : test.message);
      state.log.error('nginx cannot run the configuration', { reason });
      throw new ConductorError(test.ok ? ErrorCode.NginxUnavailable : ErrorCode.NginxRejected, reason);
    }
    for (const [port, reason] of blamed) await setAside(state, port, `nginx: ${reason}`);
  }
}

/** Brings nginx in line with the definitions; throws when nginx cannot run at all. */
export async function reconcile(state: InstanceState): Promise<void> {
  const { files, controller } = state.options;
  const scan = await files.scan();
  for (const name of scan.temporary) await files.removeTemporary(name);
  for (const entry of state.entries.values()) {
    entry.state = 'live';
    delete entry.reason;
  }
  // Files of ours that no definition claims go; every live definition is (re)written.
  const wanted = new Set(state.entries.keys());
  await files.apply(
    [],
    scan.ours.filter((port) => !wanted.has(port)),
  );
  await files.apply(
    [...state.entries.values()].map((entry) => entry.record),
    [],
  );
  await controller.clearLeftovers();
  if (!(await controller.isRunning())) await setAsideHeldPorts(state);
  await startSettingAside(state);
  const live = (entry: Entry | undefined): boolean => entry?.state === 'live';
  const opened: Ports = { tcp: [], udp: [] };
  for (const entry of state.entries.values()) {
    if (live(entry)) for (const protocol of protocolsOf(entry.record)) opened[protocol].push(...portsOf(entry.record));
  }
  // Ports a running nginx served from files that are gone now close once its old workers leave.
  const gone = scan.ours.filter((port) => !live(state.entries.get(port)));
  const sockets = await verifySockets(state, opened, { tcp: gone, udp: [] });
  for (const port of sockets.missing) state.log.error('stream not listening after start', { port });
  for (const port of sockets.lingering) state.log.warn('port still listening after its stream was dropped', { port });
  const count = [...state.entries.values()].filter(live).length;
  state.log.info('nginx in line with the definitions', { live: count, failed: state.entries.size - count });
}
