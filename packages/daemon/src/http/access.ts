/**
 * What a request needs of a token's role: `read` for the calls that only look (listings, get,
 * status, stats, events, metrics, a health probe, a dry-run apply that names no TLS file), `write`
 * for everything else.
 * Reads are listed; anything not listed, an unknown path or method included, needs write, so a
 * route added later is closed to read tokens until it is listed here.
 */
import type { TokenRole } from '../config/tokens.js';

/**
 * The path as the router matches it: express matches paths without regard to case and with or
 * without a trailing slash, so both are taken off here. Nothing is decoded: a percent-encoded
 * path matches no read below and so needs write, whatever the router makes of it.
 */
export function normalisedPath(path: string): string {
  const lower = path.toLowerCase();
  const trimmed = lower.replace(/\/+$/, '');
  return trimmed === '' ? '/' : trimmed;
}

const SEGMENT = '[^/]+';

/** GET (and HEAD, which express answers with the GET route) paths that only read. */
const READ_GETS = [
  '/status',
  '/getstreams',
  `/hasstream/${SEGMENT}`,
  '/getfreeport',
  '/metrics',
  '/v1/status',
  '/v1/openapi.json',
  '/v1/streams',
  `/v1/streams/${SEGMENT}`,
  '/v1/events',
  '/v1/free-port',
].map((pattern) => new RegExp(`^${pattern.replace(/\./g, '\\.')}$`));

/** POST paths that only read: probing a stream's backends now. */
const READ_POSTS = [new RegExp(`^/v1/streams/${SEGMENT}/health$`)];

const APPLY = '/v1/apply';

/**
 * The role `method` on `path` needs. `body` is the parsed JSON body, which only the declarative
 * apply looks at: with `"dryRun": true` it plans and changes nothing.
 */
export function accessFor(method: string, path: string, body?: unknown): TokenRole {
  const verb = method.toUpperCase();
  const normal = normalisedPath(path);
  if (verb === 'GET' || verb === 'HEAD') return READ_GETS.some((pattern) => pattern.test(normal)) ? 'read' : 'write';
  if (verb !== 'POST') return 'write';
  if (READ_POSTS.some((pattern) => pattern.test(normal))) return 'read';
  if (normal === APPLY && isDryRun(body)) return 'read';
  return 'write';
}

/** The fields that make the daemon read a file of the host's: a dry run with them is a write. */
const FILE_FIELDS = ['tlsCert', 'tlsKey', 'backendCa'];

function isDryRun(body: unknown): boolean {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return false;
  const { dryRun, streams } = body as { dryRun?: unknown; streams?: unknown };
  return dryRun === true && !namesFiles(streams);
}

/**
 * Whether any stream of an apply names a TLS file: planning it reads the file, which would tell a
 * read token whether a path exists and holds a certificate or a key. Anything not a plain list of
 * objects counts as naming files (the route refuses it anyway).
 */
function namesFiles(streams: unknown): boolean {
  if (streams === undefined) return false;
  if (!Array.isArray(streams)) return true;
  return streams.some(
    (stream) =>
      typeof stream !== 'object' ||
      stream === null ||
      Array.isArray(stream) ||
      FILE_FIELDS.some((field) => (stream as Record<string, unknown>)[field] !== undefined),
  );
}
