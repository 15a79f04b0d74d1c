/**
 * Real certificates for the TLS tests, made with openssl in a temporary folder: a CA, a server
 * certificate for 127.0.0.1, ::1 and localhost signed by it, a client certificate signed by it,
 * and a second, unrelated CA (with a server certificate of its own) that nothing trusts.
 */
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  createServer as createTlsServer,
  type TLSSocket,
  type Server as TlsServer,
  connect as tlsConnect,
} from 'node:tls';
import { promisify } from 'node:util';

const run = promisify(execFile);

async function openssl(dir: string, args: string[]): Promise<void> {
  await run('openssl', args, { cwd: dir });
}

export interface Certs {
  dir: string;
  ca: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A CA nobody trusts, and a server certificate for 127.0.0.1 it signed. */
  wrongCa: string;
  wrongServerCert: string;
  wrongServerKey: string;
  /** A client certificate the wrong CA signed. */
  wrongClientCert: string;
  wrongClientKey: string;
}

async function makeCa(dir: string, name: string): Promise<void> {
  await openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`]);
  await openssl(dir, [
    'req',
    '-x509',
    '-new',
    '-key',
    `${name}.key`,
    '-sha256',
    '-days',
    '2',
    '-subj',
    `/CN=${name} test CA`,
    '-out',
    `${name}.pem`,
  ]);
}

/**
 * A key and a certificate `name` signed by the CA `ca`: for a server (its names as subjectAltName)
 * or for a client. Returns the certificate's path; the key is `<name>.key`.
 */
export async function signCertificate(
  dir: string,
  ca: string,
  name: string,
  usage: 'server' | 'client',
  serial: number,
  /** An existing key (a path in `dir`) to certify again, as a renewal does; a new one by default. */
  key = `${name}.key`,
): Promise<string> {
  if (key === `${name}.key`) {
    await openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key]);
  }
  await openssl(dir, ['req', '-new', '-key', key, '-subj', `/CN=${name}`, '-out', `${name}.csr`]);
  const extensions =
    usage === 'server'
      ? 'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nextendedKeyUsage=serverAuth\n'
      : 'extendedKeyUsage=clientAuth\n';
  await writeFile(join(dir, `${name}.ext`), `basicConstraints=CA:FALSE\n${extensions}`);
  await openssl(dir, [
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    `${ca}.pem`,
    '-CAkey',
    `${ca}.key`,
    '-set_serial',
    String(serial),
    '-days',
    '2',
    '-sha256',
    '-extfile',
    `${name}.ext`,
    '-out',
    `${name}.pem`,
  ]);
  return join(dir, `${name}.pem`);
}

export async function makeCerts(dir: string): Promise<Certs> {
  await makeCa(dir, 'ca');
  await makeCa(dir, 'wrong-ca');
  await signCertificate(dir, 'ca', 'server', 'server', 1);
  await signCertificate(dir, 'ca', 'client', 'client', 2);
  await signCertificate(dir, 'wrong-ca', 'wrong-server', 'server', 3);
  await signCertificate(dir, 'wrong-ca', 'wrong-client', 'client', 4);
  return {
    dir,
    ca: join(dir, 'ca.pem'),
    caKey: join(dir, 'ca.key'),
    serverCert: join(dir, 'server.pem'),
    serverKey: join(dir, 'server.key'),
    clientCert: join(dir, 'client.pem'),
    clientKey: join(dir, 'client.key'),
    wrongCa: join(dir, 'wrong-ca.pem'),
    wrongServerCert: join(dir, 'wrong-server.pem'),
    wrongServerKey: join(dir, 'wrong-server.key'),
    wrongClientCert: join(dir, 'wrong-client.pem'),
    wrongClientKey: join(dir, 'wrong-client.key'),
  };
}

/** The SHA-256 fingerprint of a PEM certificate file, as node's TLS sockets report it. */
export async function fingerprintOf(file: string): Promise<string> {
  return new X509Certificate(await readFile(file)).fingerprint256;
}

/** One HTTPS request, verified against `ca`; with a client certificate when given. */
export function httpsRequest(
  url: string,
  options: {
    method?: string;
    ca?: string;
    cert?: string;
    key?: string;
    token?: string;
    body?: unknown;
  } = {},
): Promise<{ status: number; text: string; json: unknown; fingerprint256: string | undefined }> {
  return (async () => {
    const { request } = await import('node:https');
    const read = (file: string | undefined): Promise<Buffer | undefined> =>
      file === undefined ? Promise.resolve(undefined) : readFile(file);
    const [ca, cert, key] = await Promise.all([read(options.ca), read(options.cert), read(options.key)]);
    const body = options.body === undefined ? undefined : JSON.stringify(options.body);
    const headers: Record<string, string> = {};
    if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    return new Promise((resolve, reject) => {
      const outgoing = request(
        url,
        // A connection of its own each time (no agent): what is served now, not what was.
        { method: options.method ?? 'GET', headers, ca, cert, key, agent: false },
        (incoming) => {
          const socket = incoming.socket as TLSSocket;
          const fingerprint256 = socket.getPeerCertificate?.().fingerprint256;
          const chunks: Buffer[] = [];
          incoming.on('data', (chunk: Buffer) => chunks.push(chunk));
          incoming.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let json: unknown;
            try {
              json = JSON.parse(text);
            } catch {
              json = undefined;
            }
            resolve({ status: incoming.statusCode ?? 0, text, json, fingerprint256 });
          });
          incoming.on('error', reject);
        },
      );
      outgoing.on('error', reject);
      outgoing.end(body);
    });
  })();
}

/**
 * A server certificate for an existing key (a path in `dir`), signed by `ca`, valid only between
 * two given times (openssl's YYYYMMDDHHMMSSZ): one that expired, or one not valid yet. `openssl ca`
 * is the one openssl command that takes explicit dates.
 */
export async function certificateValidBetween(
  dir: string,
  ca: string,
  name: string,
  key: string,
  start: string,
  end: string,
): Promise<string> {
  const db = join(dir, `${name}.ca`);
  await run('mkdir', ['-p', db]);
  await writeFile(join(db, 'index.txt'), '');
  await writeFile(join(db, 'serial'), '1000\n');
  await writeFile(
    join(db, 'ca.cnf'),
    [
      '[ca]',
      'default_ca = here',
      '[here]',
      `database = ${join(db, 'index.txt')}`,
      `new_certs_dir = ${db}`,
      `serial = ${join(db, 'serial')}`,
      'default_md = sha256',
      'policy = any',
      'unique_subject = no',
      '[any]',
      'commonName = supplied',
      '',
    ].join('\n'),
  );
  await openssl(dir, ['req', '-new', '-key', key, '-subj', `/CN=${name}`, '-out', `${name}.csr`]);
  await writeFile(
    join(dir, `${name}.ext`),
    'basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nextendedKeyUsage=serverAuth\n',
  );
  await openssl(dir, [
    'ca',
    '-batch',
    '-config',
    join(db, 'ca.cnf'),
    '-cert',
    `${ca}.pem`,
    '-keyfile',
    `${ca}.key`,
    '-in',
    `${name}.csr`,
    '-startdate',
    start,
    '-enddate',
    end,
    '-extfile',
    `${name}.ext`,
    '-notext',
    '-out',
    `${name}.pem`,
  ]);
  return join(dir, `${name}.pem`);
}

/**
 * One TLS session to a loopback port, verified against `ca` for `servername`: the first answer
 * to `text`, and the SHA-256 fingerprint of the certificate the server showed.
 */
export async function tlsRoundTrip(
  port: number,
  text: string,
  ca: string,
  servername = 'localhost',
  host = '127.0.0.1',
): Promise<{ answer: string; fingerprint256: string }> {
  const trusted = await readFile(ca);
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ port, host, servername, ca: trusted }, () => {
      const fingerprint256 = socket.getPeerCertificate().fingerprint256;
      socket.once('data', (chunk: Buffer) => {
        socket.destroy();
        resolve({ answer: chunk.toString('utf8'), fingerprint256 });
      });
      socket.write(text);
    });
    socket.setTimeout(10_000, () => socket.destroy(new Error(`no TLS answer from port ${port} in 10 s`)));
    socket.once('error', reject);
  });
}

/**
 * A TLS backend on 127.0.0.1 (`port`; 0: a free one) serving the certificate and key files given:
 * it answers each chunk with `<answer>:<chunk>` (nothing when `answer` is undefined). A client that
 * hangs up during the handshake (nginx, after a failed check) is ignored. The caller closes it.
 */
export async function tlsBackendWith(
  cert: string,
  key: string,
  options: { port?: number; answer?: string; minVersion?: 'TLSv1.2' } = {},
): Promise<{ server: TlsServer; port: number }> {
  const { answer } = options;
  const server = createTlsServer(
    {
      cert: await readFile(cert),
      key: await readFile(key),
      ...(options.minVersion === undefined ? {} : { minVersion: options.minVersion }),
    },
    (socket) => {
      if (answer !== undefined) socket.on('data', (chunk) => socket.write(`${answer}:${chunk.toString('utf8')}`));
      socket.on('error', () => socket.destroy());
    },
  );
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', () => resolve()));
  return { server, port: (server.address() as { port: number }).port };
}

/**
 * A TLS backend on 127.0.0.1 (a free port) with its own certificate (CN=name) signed by the test CA
 * in `dir` (see makeCerts): it answers each chunk with `<name>:<chunk>`. The caller closes it.
 */
export async function namedTlsBackend(
  dir: string,
  name: string,
  serial: number,
): Promise<{ server: TlsServer; port: number }> {
  const cert = await signCertificate(dir, 'ca', name, 'server', serial);
  return tlsBackendWith(cert, join(dir, `${name}.key`), { answer: name, minVersion: 'TLSv1.2' });
}

/** A TLS session to `host`:`port` named `servername` (the server's certificate not checked), open for the caller. */
export function openTlsSession(port: number, servername: string, host = '127.0.0.1'): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ port, host, servername, rejectUnauthorized: false }, () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Writes `text` on an open TLS session and resolves with the first answer. */
export function tlsExchange(socket: TLSSocket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    socket.once('data', (chunk: Buffer) => resolve(chunk.toString('utf8')));
    socket.once('error', reject);
    socket.write(text);
  });
}
