import type { ApiClient } from '../client.js';
import type { Output } from '../output.js';

export async function findFreePort(client: ApiClient): Promise<number> {
  return (await client.call<{ port: number }>('GET', '/v1/free-port')).port;
}

export function printFreePort(port: number, output: Output): void {
  output.out(output.json ? JSON.stringify({ port }) : String(port));
}
