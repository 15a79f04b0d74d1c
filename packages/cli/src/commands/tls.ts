/**
 * TLS on a stream in the CLI: the flags of create, what get shows (each certificate's end of
 * validity, a renewal that could not be served, the last failed handshake with a backend) and the
 * one-cell summary of `ls -o wide`.
 */
import type { StreamInput, StreamSpec, StreamView } from '@stream-conductor/shared';
import type { Command } from 'commander';

/** What the TLS flags give, named as the API's fields (backendVerify false with --no-backend-verify). */
export type TlsOptions = Pick<
  StreamSpec,
  'tlsCert' | 'tlsKey' | 'backendTls' | 'backendCa' | 'backendName' | 'backendVerify'
>;

export function addTlsOptions(command: Command): Command {
  return command
    .option(
      '--tls-cert <file>',
      'terminate TLS: the PEM certificate (chain) clients see, an absolute path on the daemon host',
    )
    .option('--tls-key <file>', 'the PEM private key of --tls-cert, an absolute path on the daemon host')
    .option('--backend-tls', 'speak TLS to the backends')
    .option(
      '--backend-ca <file>',
      "the PEM CA the backends' certificates must chain to (verification is on by default)",
    )
    .option('--backend-name <name>', "the name the backends' certificates must carry (default: the backend's host)")
    .option('--no-backend-verify', "do not check the backends' certificates");
}

export function tlsInput(options: TlsOptions, input: StreamInput): void {
  if (options.tlsCert !== undefined) input.tlsCert = options.tlsCert;
  if (options.tlsKey !== undefined) input.tlsKey = options.tlsKey;
  if (options.backendTls) input.backendTls = true;
  if (options.backendCa !== undefined) input.backendCa = options.backendCa;
  if (options.backendName !== undefined) input.backendName = options.backendName;
  if (options.backendVerify === false) input.backendVerify = false;
}

/** The rows of `get` about TLS. */
export function tlsRows(stream: StreamView): Array<[string, string]> {
  const rows: Array<[string, string]> = [];
  if (stream.tlsCert !== undefined) rows.push(['tls', `terminated: ${stream.tlsCert} (key ${stream.tlsKey ?? '?'})`]);
  if (stream.backendTls === true) {
    const verify =
      stream.backendVerify === false
        ? 'not verified'
        : `verified against ${stream.backendCa ?? '?'}${stream.backendName === undefined ? '' : ` as ${stream.backendName}`}`;
    rows.push(['backend tls', verify]);
  }
  for (const facts of stream.tlsMaterial?.certificates ?? [])
    rows.push([
      facts.field === 'tlsCert' ? 'certificate' : 'backend ca',
      `${facts.subject}, valid until ${facts.notAfter} (sha256 ${facts.fingerprint256})`,
    ]);
  if (stream.tlsProblem !== undefined) rows.push(['tls renewal', `not served: ${stream.tlsProblem}`]);
  const failures = stream.backendTlsFailures;
  if (failures !== undefined) {
    const { last } = failures;
    rows.push([
      'tls to backend',
      last === undefined
        ? `${failures.count} handshake(s) failed, none since the stream last changed or a session went through`
        : `${last.at} ${last.reason}: ${last.message} (backend ${last.backend}, client ${last.client}); ${failures.count} in all`,
    ]);
  }
  return rows;
}

/** `-o wide`: TLS in one cell. */
export function tlsSummary(stream: StreamView): string {
  const parts: string[] = [];
  const until = (field: string): string => {
    const ends = (stream.tlsMaterial?.certificates ?? []).filter((facts) => facts.field === field);
    const first = ends.map((facts) => facts.notAfter).sort()[0];
    return first === undefined ? '' : ` until ${first.slice(0, 10)}`;
  };
  if (stream.tlsCert !== undefined) parts.push(`edge${until('tlsCert')}`);
  if (stream.backendTls === true) parts.push(stream.backendVerify === false ? 'backend (unverified)' : 'backend');
  if (stream.tlsProblem !== undefined) parts.push('renewal refused');
  if (stream.backendTlsFailures?.last !== undefined)
    parts.push(`backend failing (${stream.backendTlsFailures.last.reason})`);
  return parts.length === 0 ? '-' : parts.join(', ');
}
