import type { CreateResult } from '@stream-conductor/shared';
import type { ApiClient } from '../client.js';
import type { Output } from '../output.js';

export function createStream(client: ApiClient, port: number, backend: string): Promise<CreateResult> {
  return client.call<CreateResult>('POST', '/v1/streams', { port, backend });
}

export function printCreated(result: CreateResult, output: Output): void {
  if (output.json) {
    output.out(JSON.stringify(result, null, 2));
  } else {
    const { stream } = result;
    output.out(`${output.color.bold(String(stream.port))} -> ${stream.backend} ${output.color.green(stream.state)}`);
  }
  for (const warning of result.warnings) output.err(`${output.errColor.yellow('warning:')} ${warning}`);
}
