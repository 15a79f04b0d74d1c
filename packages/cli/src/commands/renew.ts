import type { CreateResult } from '@stream-conductor/shared';
import type { ApiClient } from '../client.js';

export function renewStream(
  client: ApiClient,
  port: number,
  body: { ttl: string } | { expiresAt: string | null },
): Promise<CreateResult> {
  return client.call<CreateResult>('POST', `/v1/streams/${port}/renew`, body);
}
