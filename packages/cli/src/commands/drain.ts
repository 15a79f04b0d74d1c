/** `conductor drain PORT`: the port refuses new connections; the stream goes when its sessions have. */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  ConductorError,
  type CreateResult,
  type DrainAnswer,
  ErrorCode,
  formatPorts,
  printable,
  type StreamView,
} from '@stream-conductor/shared';
import type { ApiClient } from '../client.js';
import type { Output } from '../output.js';
import { printData } from '../output-formats.js';

export function drainStream(
  client: ApiClient,
  port: number | string,
  timeout: string | undefined,
): Promise<DrainAnswer> {
  const body = timeout === undefined ? {} : { timeout };
  return client.call<DrainAnswer>('POST', `/v1/streams/${port}/drain`, body);
}

export function cancelDrain(client: ApiClient, port: number | string): Promise<CreateResult> {
  return client.call<CreateResult>('DELETE', `/v1/streams/${port}/drain`);
}

/**
 * Waits until the draining stream on `port` is gone (its sessions ended or were cut), looking
 * every `pollMs`. A stream that is live again (the drain was called off) is an error.
 */
export async function waitDrained(client: ApiClient, port: number | string, pollMs = 500): Promise<void> {
  for (;;) {
    let stream: StreamView;
    try {
      stream = (await client.call<{ stream: StreamView }>('GET', `/v1/streams/${port}`)).stream;
    } catch (error) {
      if (error instanceof ConductorError && error.code === ErrorCode.NotFound) return;
      throw error;
    }
    if (stream.state !== 'draining')
      throw new ConductorError(ErrorCode.Conflict, `stream ${port} is ${stream.state} again: its drain was called off`);
    await sleep(pollMs);
  }
}

export function describeDraining(stream: StreamView): string {
  const open = stream.openSessions === undefined ? '' : `${stream.openSessions} session(s) open, `;
  return `${formatPorts(stream)} draining: ${open}cut and removed at ${stream.drainingUntil ?? '?'} at the latest`;
}

/** The draining stream on stdout; on stderr, each host (fleet mode) that has not said its port refuses. */
export function printDraining({ stream, warnings = [] }: DrainAnswer, output: Output): void {
  if (!printData(output, stream, () => [stream.port])) output.out(describeDraining(stream));
  for (const warning of warnings) output.err(`${output.errColor.yellow('warning:')} ${printable(warning)}`);
}
