/**
 * How the CLI reaches a daemon safely, decided before anything is sent: the TLS options of an
 * https:// URL (the CA to verify the daemon with, a client certificate for mutual TLS, or no
 * verification when told --insecure), and the refusal to send a token in clear text (http://) to
 * an address that is not this machine's loopback. A pure function of the values given (files are
 * read through `read`), so any source of settings (flags, variables, a saved context) can use it.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { ConductorError, ErrorCode } from '@stream-conductor/shared';

export interface TransportInput {
  /** The daemon's URL, http:// or https://. */
  url: string;
  /** The API token, when one is sent. */
  token?: string | undefined;
  /** CA certificate (PEM) to verify the daemon's certificate with, instead of the system's CAs. */
  caFile?: string | undefined;
  /** Client certificate and key (PEM) for a daemon that requires one (mutual TLS). */
  certFile?: string | undefined;
  keyFile?: string | undefined;
  /** https: do not verify the daemon's certificate; http: send the token in clear text anyway. */
  insecure?: boolean | undefined;
}

/** The options node's https.request takes for one daemon. */
export interface TlsClientOptions {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  rejectUnauthorized: boolean;
}

export interface Transport {
  /** undefined for http:// URLs. */
  tls: TlsClientOptions | undefined;
  /** What the user should know (the check is off, the token goes in clear text): for stderr. */
  warnings: string[];
}

/** 127.0.0.0/8, ::1 and localhost: traffic that never leaves this machine. */
export function isLoopbackHost(hostname: string): boolean {
  const bare = hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname;
  if (bare.toLowerCase() === 'localhost') return true;
  if (isIP(bare) === 4) return bare.startsWith('127.');
  // The URL parser writes IPv6 addresses in their shortest form: ::1 is the only loopback.
  return bare === '::1';
}

const usage = (message: string, hint?: string): ConductorError =>
  new ConductorError(ErrorCode.Usage, message, { hint });

function readPem(what: string, file: string, read: (file: string) => Buffer): Buffer {
  try {
    return read(file);
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
    throw usage(`cannot read the ${what} ${file} (${reason})`);
  }
}

/** Throws a USAGE error (exit 2) for a combination that would be unsafe or cannot work. */
export function transportFor(input: TransportInput, read: (file: string) => Buffer = readFileSync): Transport {
  const url = new URL(input.url);
  const insecure = input.insecure === true;
  const warnings: string[] = [];
  if ((input.certFile === undefined) !== (input.keyFile === undefined)) {
    throw usage('a client certificate needs both --cert and --key (CONDUCTOR_CLIENT_CERT, CONDUCTOR_CLIENT_KEY)');
  }
  if (url.protocol === 'http:') {
    if (input.caFile !== undefined || input.certFile !== undefined) {
      throw usage(
        `--ca, --cert and --key are for https:// URLs; ${url.origin} is plain HTTP and verifies nothing`,
        'use the https:// URL of the daemon (it serves HTTPS with CONDUCTOR_TLS_CERT and CONDUCTOR_TLS_KEY)',
      );
    }
    if (input.token !== undefined && !isLoopbackHost(url.hostname)) {
      if (!insecure) {
        throw usage(
          `refusing to send the API token in clear text to ${url.origin}: it is not a loopback address`,
          'use https:// (the daemon serves it with CONDUCTOR_TLS_CERT and CONDUCTOR_TLS_KEY), or --insecure on a network you trust',
        );
      }
      warnings.push(`--insecure: the API token goes to ${url.origin} in clear text`);
    }
    return { tls: undefined, warnings };
  }
  const tls: TlsClientOptions = { rejectUnauthorized: !insecure };
  if (input.caFile !== undefined) tls.ca = readPem('CA certificate', input.caFile, read);
  if (input.certFile !== undefined && input.keyFile !== undefined) {
    tls.cert = readPem('client certificate', input.certFile, read);
    tls.key = readPem('client key', input.keyFile, read);
  }
  if (insecure)
    warnings.push(`--insecure: the certificate of ${url.origin} is not verified; anyone in between can read the token`);
  return { tls, warnings };
}
