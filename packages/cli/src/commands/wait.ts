/**
 * `conductor wait PORT --for live|healthy|gone`: returns once the stream on PORT is in that
 * condition, or fails at the timeout saying what it saw last. live: served (on every host of a
 * fleet); healthy: live, and every backend accepted a connection just now (the daemon probes
 * them on each look, once a second; a UDP stream cannot be probed and is refused); gone: no
 * stream on the port. A daemon that does not answer (restarting, say) is asked again until the
 * timeout.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { ConductorError, ErrorCode, formatDuration, type StreamView } from '@stream-conductor/shared';
import type { ApiClient } from '../client.js';
import type { Output } from '../output.js';
import { printData } from '../output-formats.js';

export const CONDITIONS = ['live', 'healthy', 'gone'] as const;
export type Condition = (typeof CONDITIONS)[number];

/** What the stream is now, as the condition sees it: undefined when there is no stream. */
async function look(client: ApiClient, port: number, condition: Condition): Promise<StreamView | undefined> {
  try {
    // healthy: the daemon probes the backends now and answers the stream with their health.
    if (condition === 'healthy')
      return (await client.call<{ stream: StreamView }>('POST', `/v1/streams/${port}/health`)).stream;
    return (await client.call<{ stream: StreamView }>('GET', `/v1/streams/${port}`)).stream;
  } catch (error) {
    if (error instanceof ConductorError && error.code === ErrorCode.NotFound) return undefined;
    throw error;
  }
}

function isLive(stream: StreamView): boolean {
  return stream.state === 'live' && (stream.hosts ?? []).every((host) => host.state === 'live');
}

function met(stream: StreamView | undefined, condition: Condition): boolean {
  if (stream !== undefined && condition === 'healthy' && stream.protocol === 'udp')
    throw new ConductorError(ErrorCode.Usage, `stream ${stream.port} is UDP: its backends cannot be probed`, {
      hint: `wait for it to be live: conductor wait ${stream.port} --for live`,
    });
  if (condition === 'gone') return stream === undefined;
  if (stream === undefined || !isLive(stream)) return false;
  if (condition === 'live') return true;
  const backends = stream.stats?.backends ?? [];
  return backends.length > 0 && backends.every((backend) => backend.state === 'up');
}

function describe(stream: StreamView | undefined): string {
  if (stream === undefined) return 'no stream';
  const parts = [stream.state + (stream.reason ? ` (${stream.reason})` : '')];
  const notLive = (stream.hosts ?? []).filter((host) => host.state !== 'live');
  if (notLive.length > 0) parts.push(`not live on ${notLive.map((host) => `${host.host} (${host.state})`).join(', ')}`);
  const down = (stream.stats?.backends ?? []).filter((backend) => backend.state !== 'up');
  if (down.length > 0)
    parts.push(
      `backends not up: ${down.map((backend) => `${backend.backend} ${backend.error ?? backend.state}`).join(', ')}`,
    );
  return parts.join('; ');
}

/**
 * Looks every `pollMs` (a second for healthy, which probes the backends) until the condition
 * holds; a refusal (exit 1) at the timeout, or the daemon's own error when it never answered.
 */
export async function waitFor(
  client: ApiClient,
  port: number,
  condition: Condition,
  timeoutMs: number,
  pollMs = condition === 'healthy' ? 1000 : 250,
): Promise<StreamView | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let stream: StreamView | undefined;
    try {
      stream = await look(client, port, condition);
    } catch (error) {
      if (!(error instanceof ConductorError && error.code === ErrorCode.DaemonUnreachable)) throw error;
      if (Date.now() >= deadline) throw error;
      await sleep(Math.min(pollMs, Math.max(0, deadline - Date.now())));
      continue;
    }
    if (met(stream, condition)) return stream;
    if (Date.now() >= deadline)
      throw new ConductorError(
        ErrorCode.Conflict,
        `port ${port} is not ${condition} after ${formatDuration(timeoutMs)}: ${describe(stream)}`,
      );
    await sleep(Math.min(pollMs, Math.max(0, deadline - Date.now())));
  }
}

/** What held: the stream (or `{port, gone: true}`) as data, its port with -o name, a line otherwise. */
export function printWaited(port: number, condition: Condition, stream: StreamView | undefined, output: Output): void {
  if (!printData(output, stream ?? { port, gone: true }, () => [port])) output.out(`${port} ${condition}`);
}
