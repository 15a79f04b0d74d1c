/**
 * HTTPS for the API: a certificate and its key (PEM files), and optionally a CA whose client
 * certificates the API then requires (mutual TLS). The files are read here once to refuse, at
 * start-up, a set that cannot serve (an unreadable file, a key that is not the certificate's);
 * http/tls-reload.ts reads them again when they change.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext, type SecureContextOptions } from 'node:tls';
import type { SettingValues } from './values.js';

export interface ApiTlsFiles {
  /** Certificate (chain) the API serves, PEM. Absolute. */
  cert: string;
  /** Its private key, PEM. Absolute. */
  key: string;
  /** CA of the client certificates the API requires (mutual TLS); undefined: none asked for. */
  clientCa: string | undefined;
}

/** The TLS material of a set of files, ready for tls.createServer or setSecureContext. */
export function tlsMaterial(files: ApiTlsFiles): SecureContextOptions {
  const material: SecureContextOptions = { cert: readFileSync(files.cert), key: readFileSync(files.key) };
  if (files.clientCa !== undefined) material.ca = readFileSync(files.clientCa);
  return material;
}

/**
 * Throws, with the reason, when the material cannot serve: OpenSSL refuses a key that does not
 * belong to the certificate, and PEM that is not a certificate or a key.
 */
export function checkMaterial(material: SecureContextOptions): void {
  createSecureContext({ ...material, minVersion: 'TLSv1.2' });
  // OpenSSL takes a CA file without a certificate in it silently, and then refuses every client.
  if (material.ca !== undefined) {
    try {
      new X509Certificate(material.ca as Buffer);
    } catch {
      throw new Error('the client CA file holds no PEM certificate');
    }
  }
}

function reasonOf(error: unknown): string {
  return (error as NodeJS.ErrnoException).code ?? (error as Error).message;
}

/** Reads CONDUCTOR_TLS_CERT, _KEY and _CLIENT_CA; undefined when the API speaks plain HTTP. */
export function readApiTls(values: SettingValues, exposed: string[]): ApiTlsFiles | undefined {
  const cert = values.path('tlsCert');
  const key = values.path('tlsKey');
  const clientCa = values.path('tlsClientCa');
  if (cert === undefined && key === undefined) {
    if (clientCa !== undefined)
      values.fail('tlsClientCa', 'a client CA needs CONDUCTOR_TLS_CERT and CONDUCTOR_TLS_KEY');
    return undefined;
  }
  if (cert === undefined || key === undefined) {
    values.fail(cert === undefined ? 'tlsCert' : 'tlsKey', 'HTTPS needs both CONDUCTOR_TLS_CERT and CONDUCTOR_TLS_KEY');
  }
  values.readable('tlsCert', cert);
  values.secret('tlsKey', key, exposed);
  if (clientCa !== undefined) values.readable('tlsClientCa', clientCa);
  const files = { cert, key, clientCa };
  try {
    checkMaterial(tlsMaterial(files));
  } catch (error) {
    const reason = reasonOf(error);
    if (clientCa !== undefined && reason.includes('client CA')) values.fail('tlsClientCa', `${clientCa}: ${reason}`);
    // Which of the two is at fault OpenSSL does not say; the message names the pair.
    values.fail('tlsCert', `${cert} and ${key} cannot serve HTTPS: ${reason}`);
  }
  return files;
}
