import {
  type CreateResult,
  describeStreamBackends,
  formatPorts,
  printable,
  type StreamInput,
} from '@stream-conductor/shared';
import type { ApiClient } from '../client.js';
import { safeForTerminal } from '../format.js';
import type { Output } from '../output.js';
import { printData } from '../output-formats.js';

/** Creates a stream; without a port in `input`, on a free port the daemon picks. */
export function createStream(client: ApiClient, input: StreamInput): Promise<CreateResult> {
  return client.call<CreateResult>('POST', '/v1/streams', input);
}

/** Creates or replaces the stream on `port`. */
export function putStream(client: ApiClient, port: number, input: StreamInput): Promise<CreateResult> {
  return client.call<CreateResult>('PUT', `/v1/streams/${port}`, input);
}

export function describeStream(result: CreateResult, output: Output): string {
  const { stream } = result;
  const state = stream.state === 'live' ? output.color.green(stream.state) : output.color.red(stream.state);
  const proto = stream.protocol === 'tcp' ? '' : ` ${stream.protocol}`;
  const expiry = stream.expiresAt === undefined ? '' : ` (expires ${stream.expiresAt})`;
  return `${output.color.bold(formatPorts(stream))}${proto} -> ${describeStreamBackends(stream)} ${state}${expiry}`;
}

/**
 * `auto`: the port alone on stdout, so that PORT=$(conductor create auto ...) works; the rest on
 * stderr. Otherwise one line describing the stream.
 */
export function printCreated(answer: CreateResult, output: Output, auto: boolean): void {
  if (!printData(output, answer, () => [answer.stream.port])) {
    const result = safeForTerminal(answer);
    if (auto) {
      output.out(String(result.stream.port));
      output.err(describeStream(result, output));
    } else {
      const note = result.change === 'unchanged' ? ' (unchanged)' : result.change === 'replaced' ? ' (replaced)' : '';
      output.out(`${describeStream(result, output)}${note}`);
    }
  }
  for (const warning of answer.warnings) output.err(`${output.errColor.yellow('warning:')} ${printable(warning)}`);
}
