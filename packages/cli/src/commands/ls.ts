import { type StreamView, describeBackends } from '@stream-conductor/shared';
import type { ApiClient } from '../client.js';
import type { Output } from '../output.js';

export async function listStreams(client: ApiClient, labels: string[]): Promise<StreamView[]> {
  const query = labels.map((label) => `label=${encodeURIComponent(label)}`).join('&');
  return (await client.call<{ streams: StreamView[] }>('GET', `/v1/streams${query ? `?${query}` : ''}`)).streams;
}

const short = (time: string): string => time.replace(/\.[0-9]+Z$/, 'Z');

export async function printStreams(streams: StreamView[], output: Output): Promise<void> {
  if (output.json) {
    output.out(JSON.stringify(streams, null, 2));
    return;
  }
  if (streams.length === 0) {
    output.err('no streams');
    return;
  }
  const { color } = output;
  const withReasons = streams.some((stream) => stream.reason !== undefined);
  // Loaded only when a table is printed: `ls --json` in a script should not pay for it.
  const { default: Table } = await import('cli-table3');
  const table = new Table({
    head: ['PORT', 'PROTO', 'BACKENDS', 'STATE', 'EXPIRES', 'LABELS', ...(withReasons ? ['REASON'] : [])],
    style: { head: color.level > 0 ? ['bold'] : [], border: color.level > 0 ? ['grey'] : [] },
    chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
  });
  for (const stream of streams) {
    const state = stream.state === 'live' ? color.green(stream.state) : color.red(stream.state);
    const labels = Object.entries(stream.labels).map(([key, value]) => `${key}=${value}`).join(',');
    table.push([
      String(stream.port),
      stream.protocol,
      describeBackends(stream.backends),
      state,
      stream.expiresAt === undefined ? '-' : short(stream.expiresAt),
      labels === '' ? '-' : labels,
      ...(withReasons ? [stream.reason ?? ''] : []),
    ]);
  }
  output.out(table.toString());
}
