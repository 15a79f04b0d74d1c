import type { ApiClient } from '../client.js';
import type { Output } from '../output.js';

export interface RemoveResult {
  port: number;
  warnings: string[];
}

export function removeStream(client: ApiClient, port: number): Promise<RemoveResult> {
  return client.call<RemoveResult>('DELETE', `/v1/streams/${port}`);
}

export function printRemoved(result: RemoveResult, output: Output): void {
  if (output.json) output.out(JSON.stringify(result, null, 2));
  else output.out(`${output.color.bold(String(result.port))} removed`);
  for (const warning of result.warnings) output.err(`${output.errColor.yellow('warning:')} ${warning}`);
}
