import type { ApiClient } from '../client.js';
import type { Output } from '../output.js';

export async function findFreePort(client: ApiClient): Promise<number> {
  return (await client.call<{ port: number }>('GET', '/v1/free-port')).port;
}

export function printFreePort(port: number, output: Output): void {
  // --json has always been one line here.
  if (output.json) output.out(JSON.stringify({ port }));
  else if (output.format.name === 'yaml') output.out(output.format.serialize({ port }));
  else output.out(String(port));
}
