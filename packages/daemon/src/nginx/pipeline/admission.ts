/**
 * Admission: every request of a batch checked, in arrival order, against the state the earlier
 * ones leave (one stream per port, the port not held by another process, no move of a live
 * stream's address) before anything is written.
 */
import {
  ConductorError,
  describeBackends,
  ErrorCode,
  formatPorts,
  protocolsOf,
  type StreamRecord,
  sameSpec,
} from '@stream-conductor/shared';
import { isIPv4Mapped } from '../../sys/ports.js';
import { exhaustionError, internal } from './errors.js';
import { overlapping, probeEach } from './ranges.js';
import type { InstanceState } from './state.js';
import type { Accepted, Entry, Pending } from './types.js';

function describe(entry: Entry): string {
  const to = `to ${describeBackends(entry.record.backends)}`;
  return entry.state === 'failed' ? `${to}, set aside: ${entry.reason ?? 'unknown'}` : to;
}

/** Refuses `next` when another process holds a port or protocol our nginx does not hold yet. */
async function checkPortFree(state: InstanceState, next: StreamRecord, current: Entry | undefined): Promise<void> {
  const held = current?.state === 'live' ? protocolsOf(current.record) : [];
  const all = protocolsOf(next);
  const needed = all.filter((protocol) => !held.includes(protocol));
  const heldFirst = held.length > 0 && current !== undefined ? current.record.port : undefined;
  const heldLast = current === undefined ? undefined : (current.record.portEnd ?? current.record.port);
  // The ports our nginx listens on now keep their sockets and need only a protocol they lack; a
  // port outside that span (a range that grows, a single port turned into a range) is not ours
  // yet and needs every protocol of the new definition.
  const protocolsAt = (each: number): Array<'tcp' | 'udp'> =>
    heldFirst !== undefined && heldLast !== undefined && each >= heldFirst && each <= heldLast ? needed : all;
  const { probe, port } = await probeEach(next, (each) => {
    const protocols = protocolsAt(each);
    return protocols.length === 0
      ? Promise.resolve('free' as const)
      : state.options.probePort(each, protocols, state.listenAddressOf(next));
  }).catch((error: unknown) => {
    throw exhaustionError(error) ?? error;
  });
  if (probe === 'in-use') {
    throw new ConductorError(
      ErrorCode.PortInUse,
      `port ${port}${protocolsAt(port).includes('tcp') ? '' : '/udp'} is held by another process on this host`,
      {
        hint: 'free the port or pick another one (conductor free-port finds one)',
      },
    );
  }
  if (probe === 'denied') {
    throw new ConductorError(ErrorCode.PortInUse, `port ${port} cannot be bound on this host: permission denied`, {
      hint: 'ports below 1024 need root or CAP_NET_BIND_SERVICE',
    });
  }
  if (probe === 'unavailable') {
    const address = state.listenAddressOf(next) ?? '0.0.0.0';
    throw new ConductorError(
      ErrorCode.InvalidInput,
      `listen address ${address} cannot be bound on this host: it is not one of its addresses`,
      {
        hint: isIPv4Mapped(address)
          ? 'an IPv4-mapped IPv6 address is never bound by nginx: write the IPv4 address itself (127.0.0.1, not ::ffff:127.0.0.1)'
          : 'pick an address this host has (ip -brief address), or leave the listen address out',
      },
    );
  }
}

/**
 * A definition of a single port where a range starts is refused unless its caller named the ports
 * (`"port": "9000-9000"`, `portEnd`, a range in the path): a body written for one port, or an
 * apply file listing the first port alone, would otherwise close every other port of the range.
 */
export function refuseSilentShrink(
  existing: StreamRecord | undefined,
  record: StreamRecord | StreamSpecLike,
  spanNamed: boolean,
): void {
  if (spanNamed || existing?.portEnd === undefined || record.portEnd !== undefined) return;
  if (existing.port !== record.port) return;
  const range = formatPorts(existing);
  throw new ConductorError(
    ErrorCode.Conflict,
    `port ${record.port} is the first port of the range ${range}: this definition would make it the single port ${record.port} and close the others`,
    {
      hint: `to replace the range, name its ports (PUT /v1/streams/${range}, "portEnd": ${existing.portEnd}, or "port": "${range}" in an apply file); to shrink it to one port, say so: "port": "${record.port}-${record.port}"`,
    },
  );
}

/** What refuseSilentShrink reads of a definition. */
interface StreamSpecLike {
  port: number;
  portEnd?: number;
}

/** A change made on condition (ifSpec) is refused once the port holds another definition. */
function refuseChangedMeanwhile(working: Map<number, Entry>, port: number, ifSpec: StreamRecord): void {
  const now = working.get(port);
  if (now === undefined || !sameSpec(now.record, ifSpec))
    throw new ConductorError(
      ErrorCode.Conflict,
      `stream ${port} changed meanwhile: the change based on its earlier definition is not made`,
    );
}

/** Checks one port's change against the state the earlier changes leave in `working`. */
async function admitOne(
  state: InstanceState,
  item: Pending,
  change: { port: number; record: StreamRecord | undefined; createOnly: boolean; spanNamed?: boolean | undefined },
  working: Map<number, Entry>,
): Promise<Accepted> {
  const { port, record, createOnly } = change;
  const existing = working.get(port);
  if (record === undefined) {
    if (!existing) throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
    working.delete(port);
    return { item, port, next: undefined, previous: existing, change: 'removed' };
  }
  refuseSilentShrink(existing?.record, record, change.spanNamed === true);
  if (existing && !createOnly && existing.state === 'live' && sameSpec(existing.record, record)) {
    // Unchanged from what runs: answered at once. Unchanged from what an earlier request of this
    // batch asks: answered with that request's outcome (nginx may still refuse it).
    return {
      item,
      port,
      next: existing,
      change: 'unchanged',
      ...(existing === state.entries.get(port) ? {} : { afterEarlier: true }),
    };
  }
  if (existing && createOnly) {
    throw new ConductorError(ErrorCode.StreamExists, `port ${port} already has a stream (${describe(existing)})`, {
      hint: 'remove it first, pick another port, or replace it (PUT /v1/streams/{port})',
    });
  }
  const clash = overlapping(working, port, record);
  if (clash) {
    throw new ConductorError(
      ErrorCode.StreamExists,
      `port ${clash.port} already has a stream (${formatPorts(clash.entry.record)}, ${describe(clash.entry)})`,
      { hint: 'remove it first, or pick ports that no stream uses' },
    );
  }
  // What our nginx listens on right now, on this port, is ours to reuse.
  const current = state.entries.get(port);
  if (
    existing &&
    current?.state === 'live' &&
    state.listenAddressOf(current.record) !== state.listenAddressOf(record)
  ) {
    throw new ConductorError(
      ErrorCode.Conflict,
      `port ${port}: a live stream cannot move to another listen address in place`,
      {
        hint: 'remove the stream, then create it with the new address',
      },
    );
  }
  await checkPortFree(state, record, current);
  const next: Entry = { record, state: 'live' };
  working.set(port, next);
  return { item, port, next, change: existing ? 'replaced' : 'created' };
}

/**
 * Checks each request in arrival order against the state the earlier ones leave. A refused
 * request is answered here, and so is one that changes nothing; the rest are returned.
 */
export async function admit(state: InstanceState, batch: Pending[]): Promise<Accepted[]> {
  const working = new Map(state.entries);
  const accepted: Accepted[] = [];
  for (const item of batch) {
    const { mutation } = item;
    try {
      if (mutation.kind === 'group') {
        // All or nothing: one refused change refuses the group.
        const group: Accepted[] = [];
        for (const change of mutation.changes)
          group.push(await admitOne(state, item, { ...change, createOnly: false }, working));
        accepted.push(...group.filter((one) => one.change !== 'unchanged'));
        if (group.every((one) => one.change === 'unchanged')) item.resolve({ warnings: [], change: 'unchanged' });
      } else if (mutation.kind === 'remove') {
        if (mutation.ifSpec !== undefined) refuseChangedMeanwhile(working, mutation.port, mutation.ifSpec);
        accepted.push(
          await admitOne(state, item, { port: mutation.port, record: undefined, createOnly: false }, working),
        );
      } else {
        if (mutation.kind === 'put' && mutation.ifSpec !== undefined)
          refuseChangedMeanwhile(working, mutation.record.port, mutation.ifSpec);
        const one = await admitOne(
          state,
          item,
          {
            port: mutation.record.port,
            record: mutation.record,
            createOnly: mutation.kind === 'create',
            spanNamed: mutation.kind === 'put' && mutation.spanNamed === true,
          },
          working,
        );
        if (one.change === 'unchanged' && !one.afterEarlier)
          item.resolve({ warnings: [], change: 'unchanged', ...(one.next ? { entry: { ...one.next } } : {}) });
        else accepted.push(one);
      }
    } catch (error) {
      item.reject(internal(error));
    }
  }
  return accepted;
}

/** After some requests were dropped, drops (and refuses) the later ones that relied on them. */
export function consistent(entries: ReadonlyMap<number, Entry>, accepted: Accepted[]): Accepted[] {
  const working = new Map(entries);
  return accepted.filter((one) => {
    const { item, port, next, revive } = one;
    const present = working.has(port);
    if (next && present && one.change === 'created' && !revive) {
      item.reject(new ConductorError(ErrorCode.StreamExists, `port ${port} already has a stream`));
      return false;
    }
    if (!next && !present) {
      item.reject(new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`));
      return false;
    }
    if (next) working.set(port, next);
    else working.delete(port);
    return true;
  });
}
