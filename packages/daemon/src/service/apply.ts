/**
 * Declarative applies: checking a set of streams, planning what applying it changes, and
 * applying grouped changes over several nginx instances all or nothing (the parts already
 * applied are put back when one is refused).
 */
import {
  type ApplyPlan,
  ConductorError,
  ErrorCode,
  formatPorts,
  type StreamRecord,
  type StreamSpec,
  sameSpec,
  spansOverlap,
} from '@stream-conductor/shared';
import type { Logger } from '../log.js';
import type { PortChange } from '../nginx/instance.js';
import type { ServiceInstance } from './placement.js';

/** Refuses a set of streams that names a port twice, or a port `check` refuses. */
export function checkStreamSet(specs: StreamSpec[], check: (port: number, spec: StreamSpec) => void): void {
  const seen = new Set<number>();
  const ranges: StreamSpec[] = [];
  for (const spec of specs) {
    if (seen.has(spec.port))
      throw new ConductorError(ErrorCode.InvalidInput, `port ${spec.port} appears twice in the set`);
    seen.add(spec.port);
    if (spec.portEnd !== undefined) ranges.push(spec);
    check(spec.port, spec);
  }
  // A range of the set must not take a port another stream of the set names.
  for (const range of ranges) {
    const other = specs.find((spec) => spec !== range && spansOverlap(spec, range));
    if (other)
      throw new ConductorError(
        ErrorCode.InvalidInput,
        `port ${Math.max(other.port, range.port)} appears twice in the set (in ${formatPorts(range)} and ${formatPorts(other)})`,
      );
  }
}

/**
 * What applying `specs` changes: `current(port)` is the stream that stands on a port and whether
 * it runs as it should; `existing` is every port with a stream (deleted when `prune`).
 */
export function planApply(
  specs: StreamSpec[],
  prune: boolean,
  current: (port: number) => { record: StreamSpec; live: boolean } | undefined,
  existing: Iterable<number>,
  defaultListenAddress?: string,
): ApplyPlan {
  const plan: ApplyPlan = { create: [], update: [], delete: [], unchanged: [] };
  const wanted = new Set<number>();
  for (const spec of specs) {
    wanted.add(spec.port);
    const now = current(spec.port);
    // As the apply itself refuses it (a live stream keeps its listening socket through a change).
    if (
      now?.live &&
      (now.record.listenAddress ?? defaultListenAddress) !== (spec.listenAddress ?? defaultListenAddress)
    ) {
      throw new ConductorError(
        ErrorCode.Conflict,
        `port ${spec.port}: a live stream cannot move to another listen address in place`,
        {
          hint: 'remove the stream, then create it with the new address',
        },
      );
    }
    if (!now) plan.create.push(spec.port);
    else if (!now.live || !sameSpec(now.record, spec)) plan.update.push(spec.port);
    else plan.unchanged.push(spec.port);
  }
  if (prune) for (const port of existing) if (!wanted.has(port)) plan.delete.push(port);
  for (const list of [plan.create, plan.update, plan.delete, plan.unchanged]) list.sort((a, b) => a - b);
  return plan;
}

/** One instance's part of an apply: the changes, and the changes that undo them. */
export interface ApplyPart {
  forward: PortChange[];
  backward: PortChange[];
}

/**
 * Groups the changes of an apply by the instance that serves each port. `record(port, existing)`
 * is what a port gets (undefined: its stream is removed), given the record it has now.
 */
export function groupChanges(
  ports: Iterable<readonly [number, ServiceInstance]>,
  record: (port: number, existing: StreamRecord | undefined) => StreamRecord | undefined,
  spanNamed: (port: number) => boolean = () => false,
): Map<ServiceInstance, ApplyPart> {
  const parts = new Map<ServiceInstance, ApplyPart>();
  for (const [port, instance] of ports) {
    const existing = instance.get(port)?.record;
    const part = parts.get(instance) ?? { forward: [], backward: [] };
    part.forward.push({ port, record: record(port, existing), spanNamed: spanNamed(port) });
    // Putting back what was there is never a silent shrink.
    part.backward.push({ port, record: existing, spanNamed: true });
    parts.set(instance, part);
  }
  return parts;
}

/**
 * Applies each instance's part as one verified group, in turn. When one is refused, the parts
 * already applied are put back (latest first) and the refusal is thrown. Answers the warnings.
 */
export async function applyAllOrNothing(parts: Map<ServiceInstance, ApplyPart>, log: Logger): Promise<string[]> {
  const warnings: string[] = [];
  const done: Array<[ServiceInstance, PortChange[]]> = [];
  try {
    for (const [instance, part] of parts) {
      const result = await instance.submit({ kind: 'group', changes: part.forward });
      warnings.push(...result.warnings);
      done.push([instance, part.backward]);
    }
  } catch (error) {
    for (const [instance, backward] of done.reverse()) {
      // Logged as an error, not dropped: the host now differs from what the refusal implies.
      await instance.submit({ kind: 'group', changes: backward }).catch((undo: unknown) => {
        log.error('could not put back a part of a refused apply', { instance: instance.id, error: undo });
      });
    }
    throw error;
  }
  return warnings;
}
