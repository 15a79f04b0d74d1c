/**
 * The command line's and the environment's side of transport.ts: the options --ca, --cert, --key
 * and --insecure, and their variables CONDUCTOR_CA, CONDUCTOR_CLIENT_CERT, CONDUCTOR_CLIENT_KEY and
 * CONDUCTOR_INSECURE.
 */
import { ConductorError, ErrorCode } from '@stream-conductor/shared';
import { type Command, Option } from 'commander';
import type { TransportInput } from './transport.js';

export function addTransportOptions(program: Command): Command {
  return program
    .addOption(new Option('--ca <file>', 'CA certificate (PEM) to verify an https:// daemon with').env('CONDUCTOR_CA'))
    .addOption(
      new Option('--cert <file>', 'client certificate (PEM), for a daemon that requires one').env(
        'CONDUCTOR_CLIENT_CERT',
      ),
    )
    .addOption(new Option('--key <file>', "the client certificate's key (PEM)").env('CONDUCTOR_CLIENT_KEY'))
    .addOption(
      new Option(
        '--insecure',
        "https: skip the check of the daemon's certificate; http: send the token to a non-loopback address anyway",
      ),
    );
}

interface TransportFlags {
  ca?: string;
  cert?: string;
  key?: string;
  insecure?: boolean;
}

/** CONDUCTOR_INSECURE: 1/true/yes/on, or 0/false/no/off/empty; anything else is a usage error. */
export function insecureFromEnv(value: string | undefined): boolean {
  if (value === undefined || /^(0|false|no|off|)$/i.test(value)) return false;
  if (/^(1|true|yes|on)$/i.test(value)) return true;
  throw new ConductorError(
    ErrorCode.Usage,
    `CONDUCTOR_INSECURE must be 1, true, yes, on or 0, false, no, off, got ${JSON.stringify(value)}`,
  );
}

const given = (value: string | undefined): string | undefined =>
  value === undefined || value === '' ? undefined : value;

/** The transport settings of the parsed global options and the environment (a flag wins). */
export function transportSettings(
  options: TransportFlags,
  env: NodeJS.ProcessEnv,
): Omit<TransportInput, 'url' | 'token'> {
  const insecure = insecureFromEnv(env.CONDUCTOR_INSECURE);
  return {
    caFile: given(options.ca),
    certFile: given(options.cert),
    keyFile: given(options.key),
    insecure: options.insecure === true || insecure,
  };
}
