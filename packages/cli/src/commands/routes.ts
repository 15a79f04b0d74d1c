import type { CreateResult } from '@stream-conductor/shared';
import { printable } from '@stream-conductor/shared';
import type { ApiClient } from '../client.js';
import type { Output } from '../output.js';
import { printData } from '../output-formats.js';

/** One route as the CLI sends it: {sni, backends}, {default: true, ...} or {noTls: true, ...}. */
export type RouteInput = { backends: Array<{ address: string; weight?: number; backup?: boolean }> } & (
  | { sni: string }
  | { default: true }
  | { noTls: true }
);

export function addRoute(client: ApiClient, port: number, route: RouteInput): Promise<CreateResult> {
  return client.call<CreateResult>('POST', `/v1/streams/${port}/routes`, route);
}

export interface RouteRemoved {
  port: number;
  route: string;
  /** route: the port keeps its other routes; stream: it was the last, the port is closed. */
  removed: 'route' | 'stream';
  warnings: string[];
}

export function removeRoute(client: ApiClient, port: number, id: string): Promise<RouteRemoved> {
  return client.call<RouteRemoved>('DELETE', `/v1/streams/${port}/routes/${encodeURIComponent(id)}`);
}

export function printRouteRemoved(result: RouteRemoved, output: Output): void {
  if (
    !printData(
      output,
      { port: result.port, route: result.route, removed: result.removed, warnings: result.warnings },
      () => [result.port],
    )
  )
    output.out(
      result.removed === 'stream'
        ? `${output.color.bold(String(result.port))} route ${printable(result.route)} removed; it was the last: port closed`
        : `${output.color.bold(String(result.port))} route ${printable(result.route)} removed`,
    );
  for (const warning of result.warnings) output.err(`${output.errColor.yellow('warning:')} ${printable(warning)}`);
}
