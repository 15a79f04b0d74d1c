/**
 * Picks up a renewed certificate without a restart: every few seconds the API's TLS files are
 * looked at (size, modification time, inode: a file renamed into place counts), and when any
 * changed they are read again and handed to the server for new connections. A set that cannot
 * serve (a key that is not the certificate's, a file half written or missing) is logged and the
 * one in use kept; it is tried again at the next change. Connections already open keep theirs.
 */
import { X509Certificate } from 'node:crypto';
import type { Server as HttpsServer } from 'node:https';
import type { SecureContextOptions } from 'node:tls';
import { type ApiTlsFiles, checkMaterial, tlsMaterial } from '../config/tls.js';
import type { Logger } from '../log.js';
import { filesSignature } from '../sys/files.js';

export const TLS_RELOAD_INTERVAL_MS = 2_000;

/** The served certificate's fingerprint and end of validity, for the log. */
export function certificateFacts(material: SecureContextOptions): { fingerprint256?: string; validTo?: string } {
  try {
    const certificate = new X509Certificate(material.cert as Buffer);
    return { fingerprint256: certificate.fingerprint256, validTo: new Date(certificate.validTo).toISOString() };
  } catch {
    return {};
  }
}

/** What is looked at: a change in any of it means the file changed. */
function signatureOf(files: ApiTlsFiles): Promise<string> {
  return filesSignature([files.cert, files.key, files.clientCa]);
}

export interface TlsReloader {
  stop(): void;
}

/** What the server is told to use: the same options it was started with, new material. */
type SetContext = (options: SecureContextOptions) => void;

export async function watchTlsFiles(
  server: Pick<HttpsServer, 'setSecureContext'>,
  files: ApiTlsFiles,
  log: Logger,
  intervalMs = TLS_RELOAD_INTERVAL_MS,
): Promise<TlsReloader> {
  const setContext: SetContext = (options) => server.setSecureContext({ ...options, minVersion: 'TLSv1.2' });
  let seen = await signatureOf(files);
  let busy = false;
  const look = async (): Promise<void> => {
    const now = await signatureOf(files);
    if (now === seen) return;
    seen = now;
    let material: SecureContextOptions;
    try {
      material = tlsMaterial(files);
      checkMaterial(material);
      // A renewal that is not valid now (expired, or not yet valid) would break every client.
      const { validFrom, validTo } = new X509Certificate(material.cert as Buffer);
      const now = Date.now();
      if (now < Date.parse(validFrom)) throw new Error(`the new certificate is not valid before ${validFrom}`);
      if (now > Date.parse(validTo)) throw new Error(`the new certificate expired ${validTo}`);
    } catch (error) {
      log.warn('the API TLS files changed but cannot serve; the certificate in use is kept', {
        cert: files.cert,
        key: files.key,
        error: (error as NodeJS.ErrnoException).code ?? (error as Error).message,
      });
      return;
    }
    setContext(material);
    log.info('the API TLS files changed; new connections get the new certificate', {
      cert: files.cert,
      ...certificateFacts(material),
    });
  };
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    look()
      .catch((error: unknown) => log.warn('looking at the API TLS files failed', { error }))
      .finally(() => {
        busy = false;
      });
  }, intervalMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
