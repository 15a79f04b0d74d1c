/**
 * The daemon's copies of a stream's TLS files (tlsMaterial.cert, .key, .ca: paths under its home)
 * are its own business: nginx reads them, no client needs them (an operator needs a certificate's
 * subject, end of validity and fingerprint, which tlsMaterial.certificates carries), and a path
 * under the daemon's home tells a reader of the API where it keeps private keys. Every v1 answer
 * goes through here, so that no route (a listing, get, create, put, apply, drain, a fleet's view)
 * can show them, whatever the caller's role.
 */

/** `body` with every `tlsMaterial` in it cut to its id and certificates. */
export function withoutCopyPaths(body: unknown): unknown {
  if (Array.isArray(body)) return body.map(withoutCopyPaths);
  // Only plain objects are walked: anything else (a Date, say) is left for JSON to write as it does.
  if (typeof body !== 'object' || body === null || Object.getPrototypeOf(body) !== Object.prototype) return body;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(body)) {
    if (key === 'tlsMaterial' && typeof value === 'object' && value !== null && !Array.isArray(value)) {
      const { id, certificates } = value as { id?: unknown; certificates?: unknown };
      out[key] = { id, certificates };
    } else out[key] = withoutCopyPaths(value);
  }
  return out;
}
