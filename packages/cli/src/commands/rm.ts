import { formatPorts, printable } from '@stream-conductor/shared';
import type { ApiClient } from '../client.js';
import type { Output } from '../output.js';
import { printData } from '../output-formats.js';

export interface RemoveResult {
  port: number;
  /** A range's last port. */
  portEnd?: number;
  warnings: string[];
}

/** `port`: a port, or a range as FIRST-LAST. */
export function removeStream(client: ApiClient, port: number | string, killSessions: boolean): Promise<RemoveResult> {
  return client.call<RemoveResult>('DELETE', `/v1/streams/${port}${killSessions ? '?kill_sessions=1' : ''}`);
}

export function printRemoved(result: RemoveResult, output: Output): void {
  if (!printData(output, result, () => [result.port])) output.out(`${output.color.bold(formatPorts(result))} removed`);
  for (const warning of result.warnings) output.err(`${output.errColor.yellow('warning:')} ${printable(warning)}`);
}
