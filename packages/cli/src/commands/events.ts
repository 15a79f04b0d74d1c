import { type AuditEvent, printable } from '@stream-conductor/shared';
import type { ApiClient } from '../client.js';
import { safeForTerminal } from '../format.js';
import type { Output } from '../output.js';
import { printData } from '../output-formats.js';

export interface EventsQuery {
  limit: number;
  port?: number;
  since?: string;
}

export async function listEvents(client: ApiClient, query: EventsQuery): Promise<AuditEvent[]> {
  const params = [`limit=${query.limit}`];
  if (query.port !== undefined) params.push(`port=${query.port}`);
  if (query.since !== undefined) params.push(`since=${encodeURIComponent(query.since)}`);
  return (await client.call<{ events: AuditEvent[] }>('GET', `/v1/events?${params.join('&')}`)).events;
}

/** One line an event: time, who (from where), what, on which ports, and how it ended. */
export function formatEvent(answer: AuditEvent, output: Output): string {
  const event = safeForTerminal(answer);
  const { color } = output;
  const result =
    event.result === 'ok' ? color.green('ok') : `${color.red('refused')} ${event.code ?? ''}: ${event.message ?? ''}`;
  const who = event.remote === '' ? event.actor : `${event.actor}@${event.remote}`;
  const ports =
    event.ports.length === 0
      ? ''
      : ` ${event.ports.length > 5 ? `${event.ports.slice(0, 5).join(',')},... (${event.ports.length})` : event.ports.join(',')}`;
  const detail = event.detail === undefined ? '' : ` ${event.detail}`;
  return `${event.at} ${who} ${event.action}${ports}${detail} ${result}`;
}

/**
 * Prints the latest events, then new ones as they come, until SIGINT/SIGTERM. With --json, one
 * event per line (JSON lines), so that `jq` can read the stream as it grows.
 */
export async function followEvents(
  client: ApiClient,
  output: Output,
  query: EventsQuery,
  pollMs = 1000,
): Promise<void> {
  // JSON lines with -o json; with -o yaml, one YAML document per event.
  const show = (event: AuditEvent): void =>
    output.out(
      output.json
        ? JSON.stringify(event)
        : output.format.name === 'yaml'
          ? `---\n${output.format.serialize(event)}`
          : formatEvent(event, output),
    );
  let since = query.since;
  // Events of the last printed millisecond: another may land in it after the look.
  let seenAtSince = new Set<string>();
  let stopped = false;
  let wake: () => void = () => undefined;
  const stop = (): void => {
    stopped = true;
    wake();
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  let unreachable = false;
  try {
    for (let first = true; !stopped; first = false) {
      let events: AuditEvent[];
      try {
        // Asks from a millisecond earlier than the last event shown, and skips what was shown.
        const from = since === undefined ? undefined : new Date(Date.parse(since) - 1).toISOString();
        events = await listEvents(client, { limit: first ? query.limit : 1000, port: query.port, since: from });
        if (unreachable) output.err('conductor: the daemon answers again');
        unreachable = false;
      } catch (error) {
        if (first) throw error;
        if (!unreachable) output.err(`conductor: ${printable((error as Error).message)}; still trying`);
        unreachable = true;
        events = [];
      }
      for (const event of events) {
        const key = JSON.stringify(event);
        if (since !== undefined && event.at <= since && (event.at < since || seenAtSince.has(key))) continue;
        if (event.at !== since) seenAtSince = new Set();
        since = event.at;
        seenAtSince.add(key);
        show(event);
      }
      if (!stopped) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, pollMs);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
    }
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    client.close();
  }
}

export function printEvents(events: AuditEvent[], output: Output): void {
  if (printData(output, events)) return;
  if (events.length === 0) {
    output.err('no events');
    return;
  }
  output.out(events.map((event) => formatEvent(event, output)).join('\n'));
}
