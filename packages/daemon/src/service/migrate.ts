/**
 * Takes over the old service's file layout: the old-format files in STREAM_CONFIG_PATH become
 * stored streams when they are valid, and are renamed aside either way.
 */
import {
  describeBackends,
  formatPortRange,
  isPortInRange,
  type PortRange,
  type StreamRecord,
} from '@stream-conductor/shared';
import type { Logger } from '../log.js';
import { StreamFiles } from '../nginx/stream-files.js';

export interface OldLayout {
  /** Where old-format files of the older service may be (STREAM_CONFIG_PATH). */
  folder: string;
  streamPrefix: string;
  portRange: PortRange;
}

/**
 * Adopts the old-format files of `layout` that are valid, in range and on a port no stored
 * stream (`stored`) has; renames each file to `.adopted` or `.rejected`. Answers the adopted
 * records (not yet stored) and a problem line for each file refused.
 */
export async function adoptOldFiles(
  layout: OldLayout,
  stored: ReadonlySet<number>,
  now: () => Date,
  log: Logger,
): Promise<{ adopted: StreamRecord[]; problems: string[] }> {
  const taken = new Set(stored);
  const adopted: StreamRecord[] = [];
  const problems: string[] = [];
  const legacy = new StreamFiles(layout.folder, layout.streamPrefix, { listenAddress: undefined });
  for (const { name, parsed } of (await legacy.scan()).legacy) {
    let problem: string | undefined;
    if ('error' in parsed) problem = parsed.error;
    else if (!isPortInRange(parsed.spec.port, layout.portRange))
      problem = `port ${parsed.spec.port} is outside PORT_RANGE ${formatPortRange(layout.portRange)}`;
    else if (taken.has(parsed.spec.port)) problem = `port ${parsed.spec.port} already has a stream in the store`;
    if (problem === undefined && 'spec' in parsed) {
      const record: StreamRecord = { ...parsed.spec, createdAt: now().toISOString() };
      taken.add(record.port);
      adopted.push(record);
      await legacy.retireLegacy(name, 'adopted');
      log.info('adopted an old-format stream file', {
        file: name,
        port: record.port,
        backends: describeBackends(record.backends),
      });
    } else {
      await legacy.retireLegacy(name, 'rejected');
      problems.push(`old-format file ${name} was not adopted (kept as ${name}.rejected): ${problem ?? 'unknown'}`);
      log.warn('old-format stream file not adopted', { file: name, reason: problem });
    }
  }
  return { adopted, problems };
}
