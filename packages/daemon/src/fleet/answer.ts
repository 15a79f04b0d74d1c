/**
 * The answer to a fleet write: what the change did, with a warning when another client's change to
 * the port followed it at once (the local service answers from its own master, so it has no twin).
 */
import { type CreateResult, describeBackends, type StreamRecord, type StreamView } from '@stream-conductor/shared';
import { sameDefinition } from './definition.js';

/**
 * The answer to a change that was applied as `applied`, given the port's view now (`stream`) and
 * the stream the fleet holds now (`now`). When another client's change to the port came right
 * after it (a remove or replace that won next), the answer still says what this change did, and
 * warns that it is no longer what the port holds.
 */
export function answer(
  port: number,
  stream: StreamView | undefined,
  now: StreamRecord | undefined,
  result: { warnings: string[]; change: CreateResult['change']; applied: StreamRecord },
): CreateResult {
  const { warnings, change, applied } = result;
  if (stream && sameDefinition(stream, applied)) return { stream, warnings, change };
  const after = now ? `replaced it (to ${describeBackends(now.backends)})` : 'removed it';
  return {
    stream: { ...applied, state: 'live', hosts: [] },
    warnings: [...warnings, `this change was applied, then another client's change to port ${port} ${after}`],
    change,
  };
}
