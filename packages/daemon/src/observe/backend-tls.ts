/**
 * Failed TLS handshakes with backends (streams with backendTls), from the nginx masters' error
 * logs. When nginx cannot verify a backend's certificate it closes the client's connection and
 * writes one line, such as (nginx 1.22, stream module):
 *
 *   2026/12/06 03:16:49 [error] 24000#24000: *3 upstream SSL certificate verify error: (21:unable to
 *   verify the first certificate) while SSL handshaking to upstream, client: 127.0.0.1, server:
 *   127.0.0.1:47102, upstream: "127.0.0.1:47202", bytes from/to client:0/0, bytes from/to upstream:0/0
 *
 * `server:` is the address the stream listens on as its listen directive names it (0.0.0.0:PORT for
 * a wildcard, [::1]:PORT for IPv6), so its port is the stream's. This reads those lines, counts
 * them per port and reason, and keeps the latest for the stream's view.
 */
import type { BackendTlsFailure, BackendTlsFailures, BackendTlsReason } from '@stream-conductor/shared';
import type { AccessLine } from './traffic.js';

/** A failure as read from the error log: the port it came in on, and when the daemon read it. */
export interface BackendTlsLine extends BackendTlsFailure {
  port: number;
}

const LINE =
  /^(\d{4})\/(\d\d)\/(\d\d) (\d\d):(\d\d):(\d\d) \[(error|crit|alert|emerg)\] \d+#\d+: \*\d+ (.+) while SSL handshaking to upstream, client: ([^,\s]+), server: (\S+):(\d+), upstream: "([^"]+)"/;

/** nginx's message, cut to this many characters. */
const MAX_MESSAGE = 300;

/** OpenSSL's X509_V_ERR codes by what they tell an operator. */
const VERIFY_REASONS = new Map<number, BackendTlsReason>([
  [2, 'untrusted'], // unable to get issuer certificate
  [9, 'not-yet-valid'],
  [10, 'expired'],
  [18, 'untrusted'], // self-signed certificate
  [19, 'untrusted'], // self-signed certificate in certificate chain
  [20, 'untrusted'], // unable to get local issuer certificate
  [21, 'untrusted'], // unable to verify the first certificate
  [24, 'untrusted'], // invalid CA certificate
  [27, 'untrusted'], // certificate not trusted
  [62, 'name-mismatch'], // hostname mismatch
]);

function classify(text: string): { reason: BackendTlsReason; message: string } {
  const verify = /^upstream SSL certificate verify error: \((\d+):([^)]*)\)$/.exec(text);
  if (verify) {
    const code = Number(verify[1]);
    return {
      reason: VERIFY_REASONS.get(code) ?? 'verify-other',
      message: `certificate verify error ${code}: ${verify[2] as string}`,
    };
  }
  const name = /^upstream SSL certificate does not match (.*)$/.exec(text);
  if (name) return { reason: 'name-mismatch', message: `certificate does not match ${name[1] as string}` };
  return { reason: 'handshake', message: text };
}

/**
 * A failed TLS handshake with a backend in one line of nginx's error log, or undefined for any
 * other line (warnings such as "upstream server temporarily disabled", the edge's own handshakes
 * with clients, connect failures). nginx writes local time, as this process reads it.
 */
export function parseBackendTlsLine(line: string): BackendTlsLine | undefined {
  const match = LINE.exec(line);
  if (!match) return undefined;
  const [, year, month, day, hours, minutes, seconds, , text, client, , port, upstream] = match as unknown as string[];
  const at = new Date(Number(year), Number(month) - 1, Number(day), Number(hours), Number(minutes), Number(seconds));
  const portNumber = Number(port);
  if (Number.isNaN(at.getTime()) || !Number.isInteger(portNumber) || portNumber < 1 || portNumber > 65_535)
    return undefined;
  const { reason, message } = classify(text as string);
  return {
    at: at.toISOString(),
    reason,
    message: message.slice(0, MAX_MESSAGE),
    backend: upstream as string,
    client: client as string,
    port: portNumber,
  };
}

interface Latest {
  failure: BackendTlsFailure;
  /**
   * The failure happened at or before this (ms): the end of the second nginx stamped it with, or
   * the moment the daemon read it if sooner.
   */
  byMs: number;
  /** A session through the same backend began after it. */
  superseded: boolean;
}

interface PortFailures {
  count: number;
  reasons: Partial<Record<BackendTlsReason, number>>;
  latest: Latest;
}

/** The failed backend handshakes of every port since the daemon started (or the stream was created). */
export class BackendTlsWatch {
  private readonly byPort = new Map<number, PortFailures>();

  constructor(private readonly now: () => number = Date.now) {}

  failed(line: BackendTlsLine): void {
    const { port, ...failure } = line;
    const before = this.byPort.get(port);
    const reasons = { ...before?.reasons, [failure.reason]: (before?.reasons[failure.reason] ?? 0) + 1 };
    const byMs = Math.min(this.now(), Date.parse(failure.at) + 999);
    this.byPort.set(port, { count: (before?.count ?? 0) + 1, reasons, latest: { failure, byMs, superseded: false } });
  }

  /**
   * A finished session: one that went through (status 200) by the backend of a port's latest
   * failure, and began after it, shows that backend's handshake works now.
   */
  sessionEnded(line: AccessLine): void {
    const latest = this.byPort.get(line.port)?.latest;
    if (!latest || latest.superseded || line.status !== 200) return;
    const served = (line.up ?? '').split(',').pop()?.trim();
    // $time_iso8601 is to the second: the session began no sooner than its end's second less its length.
    const began = Date.parse(line.t) - (line.s ?? 0) * 1000;
    if (served === latest.failure.backend && began > latest.byMs) latest.superseded = true;
  }

  /** A new stream on a port starts from nothing. */
  reset(port: number): void {
    this.byPort.delete(port);
  }

  /**
   * The failures of a stream's ports (a range has several), with the latest one while it is news:
   * not superseded by a session through its backend, and not older than the stream's last change
   * (`changedAt`, its updatedAt or createdAt). Undefined when there were none.
   */
  of(ports: number[], changedAt: string): BackendTlsFailures | undefined {
    let count = 0;
    const reasons: Partial<Record<BackendTlsReason, number>> = {};
    let last: Latest | undefined;
    const changedMs = Date.parse(changedAt);
    for (const port of ports) {
      const failures = this.byPort.get(port);
      if (!failures) continue;
      count += failures.count;
      for (const [reason, n] of Object.entries(failures.reasons) as Array<[BackendTlsReason, number]>)
        reasons[reason] = (reasons[reason] ?? 0) + n;
      const { latest } = failures;
      const news = !latest.superseded && !(changedMs > latest.byMs);
      if (news && (last === undefined || latest.byMs > last.byMs)) last = latest;
    }
    if (count === 0) return undefined;
    return last === undefined ? { count, reasons } : { count, reasons, last: { ...last.failure } };
  }
}
