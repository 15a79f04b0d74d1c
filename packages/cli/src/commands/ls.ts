import Table from 'cli-table3';
import type { StreamView } from '@stream-conductor/shared';
import type { ApiClient } from '../client.js';
import type { Output } from '../output.js';

export async function listStreams(client: ApiClient): Promise<StreamView[]> {
  return (await client.call<{ streams: StreamView[] }>('GET', '/v1/streams')).streams;
}

export function printStreams(streams: StreamView[], output: Output): void {
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
  const table = new Table({
    head: ['PORT', 'BACKEND', 'STATE', 'CREATED', ...(withReasons ? ['REASON'] : [])],
    style: { head: color.level > 0 ? ['bold'] : [], border: color.level > 0 ? ['grey'] : [] },
    chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
  });
  for (const stream of streams) {
    const state = stream.state === 'live' ? color.green(stream.state) : color.red(stream.state);
    table.push([String(stream.port), stream.backend, state, stream.createdAt.replace(/\.[0-9]+Z$/, 'Z'), ...(withReasons ? [stream.reason ?? ''] : [])]);
  }
  output.out(table.toString());
}
