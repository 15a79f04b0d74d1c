// @ts-check
/** The daemon's HTTP API as the soak calls it: one GET, and what its answer was in a few words. */
import http from 'node:http';
import { performance } from 'node:perf_hooks';

/**
 * @typedef {object} Answer
 * @property {number} status 0 when no HTTP answer came (transport error)
 * @property {string} text
 * @property {unknown} json undefined when the body is not JSON
 * @property {string | undefined} error transport error code
 * @property {number} send performance.now() before the request was sent
 * @property {number} ack performance.now() once the whole answer was read
 * @property {number} retries
 */

/**
 * One GET. A request that fails on a kept-alive socket the server had just closed (it never
 * reached the daemon) is sent again once on a fresh socket.
 * @param {http.Agent | undefined} agent undefined: a fresh connection, closed after the answer
 * @param {number} apiPort
 * @param {string} path
 * @param {number} timeoutMs
 * @returns {Promise<Answer>}
 */
export async function get(agent, apiPort, path, timeoutMs) {
  const send = performance.now();
  let retries = 0;
  for (;;) {
    const attempt = await new Promise(
      /** @param {(value: { status: number, text: string, error: string | undefined, reused: boolean }) => void} done */
      (done) => {
        const req = http.get({ host: '127.0.0.1', port: apiPort, path, agent: agent ?? false }, (res) => {
          /** @type {Buffer[]} */
          const chunks = [];
          res.on('data', (chunk) => chunks.push(chunk));
          res.on('end', () =>
            done({
              status: res.statusCode ?? 0,
              text: Buffer.concat(chunks).toString('utf8'),
              error: undefined,
              reused: req.reusedSocket,
            }),
          );
          res.on('error', (/** @type {NodeJS.ErrnoException} */ error) =>
            done({ status: 0, text: '', error: error.code ?? error.message, reused: req.reusedSocket }),
          );
        });
        req.setTimeout(timeoutMs, () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
        req.on('error', (/** @type {NodeJS.ErrnoException} */ error) =>
          done({ status: 0, text: '', error: error.code ?? error.message, reused: req.reusedSocket }),
        );
      },
    );
    if (
      attempt.error !== undefined &&
      attempt.reused &&
      retries === 0 &&
      ['ECONNRESET', 'EPIPE'].includes(attempt.error)
    ) {
      retries += 1;
      continue;
    }
    /** @type {unknown} */
    let json;
    try {
      json = attempt.text === '' ? undefined : JSON.parse(attempt.text);
    } catch {
      json = undefined;
    }
    return {
      status: attempt.status,
      text: attempt.text,
      json,
      error: attempt.error,
      send,
      ack: performance.now(),
      retries,
    };
  }
}

/**
 * What an answer was, in a few words, for the tables.
 * @param {Answer} answer
 */
export function outcomeOf(answer) {
  if (answer.error !== undefined) return `transport ${answer.error}`;
  if (answer.status >= 500) return `HTTP ${answer.status}`;
  const body = /** @type {Record<string, unknown> | undefined} */ (
    typeof answer.json === 'object' && answer.json !== null && !Array.isArray(answer.json) ? answer.json : undefined
  );
  if (answer.status !== 200) return `HTTP ${answer.status}`;
  if (Array.isArray(answer.json)) return 'ok';
  if (!body) return 'not JSON';
  if (body.result === 'ok' || body.result === 'true' || body.result === 'false') return 'ok';
  if (body.result === 'none available') return 'none available';
  if (body.result !== 'error') return `result ${String(body.result)}`;
  if (body.error === 'not found') return 'not found';
  const message = String(body.errors ?? body.error ?? '');
  if (/already has a stream/.test(message)) return 'exists';
  if (/outside the daemon's port range/.test(message)) return 'out of range';
  if (/held by another process|Address already in use|cannot be bound/.test(message)) return 'port in use';
  if (/^backend |must be a whole number/.test(message)) return 'invalid input';
  if (/nginx/.test(message)) return 'nginx refused';
  if (/shutting down/.test(message)) return 'shutting down';
  return 'other error';
}
