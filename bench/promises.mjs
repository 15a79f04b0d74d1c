// @ts-check
/**
 * Benchmark 8: the change API's promises under stress, checked with real connections after every
 * answer (tests/e2e/promises.test.ts at a larger size). Not a timing: counts of what new
 * connections met, and of broken promises.
 * - cycles: create/remove on one port by one client, legacy and v1 mixed; after each create
 *   answer new connections must reach the new backend, after each remove answer they must be
 *   refused by the kernel (ECONNREFUSED; accepted-then-reset is a violation); a create that
 *   follows a remove must not be refused (PORT_IN_USE). Alone, then beside churning clients.
 * - puts: PUT /v1/streams/{port} alternating two named backends (beside churn, with open
 *   sessions, every fourth PUT right after a DELETE); every new connection after the answer
 *   must reach the new backend.
 * - chaos: many clients, random legacy creates/removes and v1 POST/PUT/DELETE on a few ports,
 *   for a bounded time and count; no answer may be 5xx, INTERNAL or PORT_IN_USE; afterwards each
 *   port is exactly what GET /v1/streams lists (listed: reaches its backend; unlisted: refused,
 *   nothing listening in /proc/net/tcp).
 * Settings (environment): BENCH_PROMISES_CYCLES (300), BENCH_PROMISES_CHURN (4 clients),
 * BENCH_PROMISES_PUTS (200), BENCH_PROMISES_CLIENTS (32), BENCH_PROMISES_SECONDS (30),
 * BENCH_PROMISES_OPS (400 a chaos client at most), BENCH_PROMISES_PORTS (8 chaos ports),
 * BENCH_PROMISES_SEED (chaos choices).
 */
import { readFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { call, defaultMasters, startDaemon } from './lib.mjs';

const setting = (/** @type {string} */ name, /** @type {number} */ fallback) => {
  const value = Number(process.env[name] ?? fallback);
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name} must be a number`);
  return value;
};

/** A TCP backend on 127.0.0.1 that answers every chunk with `<name>:<chunk>`. @param {string} name */
async function namedBackend(name) {
  const sockets = new Set();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('data', (chunk) => socket.write(`${name}:${chunk.toString()}`));
    socket.on('error', () => socket.destroy());
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise((done) => server.listen(0, '127.0.0.1', () => done(undefined)));
  const address = /** @type {import('node:net').AddressInfo} */ (server.address());
  return {
    name,
    port: address.port,
    address: `127.0.0.1:${address.port}`,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((done) => server.close(() => done(undefined)));
    },
  };
}

/**
 * One new connection: 'refused' (ECONNREFUSED before the handshake), 'backend <name>',
 * 'reset (...)' when accepted and then reset or closed without a byte, 'timeout', 'error (...)'.
 * @param {number} port @returns {Promise<string>}
 */
function probe(port, timeoutMs = 3000) {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    let connected = false;
    let answer = '';
    let settled = false;
    const settle = (/** @type {string} */ outcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(outcome);
    };
    const timer = setTimeout(() => settle(`timeout (${connected ? 'accepted' : 'not connected'})`), timeoutMs);
    socket.on('connect', () => {
      connected = true;
      socket.write('who\n');
    });
    socket.on('data', (chunk) => {
      answer += chunk.toString();
      const colon = answer.indexOf(':');
      if (colon >= 0) settle(`backend ${answer.slice(0, colon)}`);
    });
    socket.on('error', (/** @type {NodeJS.ErrnoException} */ error) => {
      if (!connected && error.code === 'ECONNREFUSED') settle('refused');
      else if (error.code === 'ECONNRESET' || error.code === 'EPIPE')
        settle(`reset (${connected ? 'accepted, then ' : 'handshake, then '}${error.code})`);
      else settle(`error (${error.code ?? error.message})`);
    });
    socket.on('end', () => settle('reset (accepted, then closed)'));
    socket.on('close', () => settle(`reset (${connected ? 'accepted, then ' : ''}closed)`));
  });
}

/** A connection through `port` that has carried bytes and stays open; undefined when it did not get through. @param {number} port @returns {Promise<import('node:net').Socket | undefined>} */
function openSession(port) {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(undefined);
    }, 3000);
    socket.on('connect', () => socket.write('hold\n'));
    socket.once('data', () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.on('error', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(undefined);
    });
  });
}

/** Three connections at once, then one after another for `windowMs` (at most 30). @param {number} port @param {number} windowMs */
async function probeAfter(port, windowMs) {
  const outcomes = await Promise.all([probe(port), probe(port), probe(port)]);
  const until = Date.now() + windowMs;
  for (let k = 0; k < 30 && Date.now() < until; k += 1) outcomes.push(await probe(port));
  return outcomes;
}

/** Counts by key. */
class Tally {
  constructor() {
    /** @type {Map<string, number>} */
    this.counts = new Map();
  }
  /** @param {string} key */
  add(key, n = 1) {
    this.counts.set(key, (this.counts.get(key) ?? 0) + n);
  }
  toString() {
    return [...this.counts.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([key, n]) => `${key}: ${n}`)
      .join('; ');
  }
}

/**
 * @typedef {{ ok: boolean, status: number, code: string, message: string }} Change
 * @typedef {{ name: string, port: number, address: string, close: () => Promise<unknown> }} Backend
 */

/** @param {string} text */
function legacyCode(text) {
  if (/held by another process/.test(text)) return 'PORT_IN_USE';
  if (/already has a stream/.test(text)) return 'PORT_TAKEN';
  if (/not found/.test(text)) return 'NOT_FOUND';
  if (/vanished|internal/i.test(text)) return 'INTERNAL';
  return 'ERROR';
}

/** The change API of one daemon, both flavours, as uniform answers. @param {string} url */
function api(url) {
  /** @param {string} path @returns {Promise<Change>} */
  const legacy = async (path) => {
    try {
      const answer = await call('GET', `${url}${path}`);
      const body = typeof answer.json === 'object' && answer.json !== null ? answer.json : {};
      const message = String(body.errors ?? body.error ?? answer.json);
      const ok = answer.status === 200 && body.result === 'ok';
      return { ok, status: answer.status, code: ok ? 'OK' : legacyCode(message), message };
    } catch (error) {
      return { ok: false, status: 0, code: 'NO_ANSWER', message: String(error) };
    }
  };
  /** @param {string} method @param {string} path @param {unknown} [body] @returns {Promise<Change>} */
  const v1 = async (method, path, body) => {
    try {
      const answer = await call(method, `${url}${path}`, body);
      const ok = answer.status >= 200 && answer.status < 300;
      const error = typeof answer.json === 'object' && answer.json !== null ? answer.json.error : undefined;
      return {
        ok,
        status: answer.status,
        code: ok ? 'OK' : String(error?.code ?? 'ERROR'),
        message: ok ? '' : String(error?.message ?? JSON.stringify(answer.json)),
      };
    } catch (error) {
      return { ok: false, status: 0, code: 'NO_ANSWER', message: String(error) };
    }
  };
  return {
    /** @param {'legacy' | 'v1'} flavour @param {number} port @param {Backend} backend */
    create: (flavour, port, backend) =>
      flavour === 'legacy'
        ? legacy(`/createstream/${port}/${backend.address}`)
        : v1('POST', '/v1/streams', { port, backend: backend.address }),
    /** @param {'legacy' | 'v1'} flavour @param {number} port */
    remove: (flavour, port) =>
      flavour === 'legacy' ? legacy(`/removestream/${port}`) : v1('DELETE', `/v1/streams/${port}`),
    /** @param {number} port @param {Backend} backend */
    replace: (port, backend) => v1('PUT', `/v1/streams/${port}`, { backend: backend.address }),
    list: async () =>
      /** @type {{ streams: Array<{ port: number, backends: Array<{ address: string }> }> }} */ (
        (await call('GET', `${url}/v1/streams`)).json
      ).streams,
  };
}

/** @param {Change} change */
const said = (change) => `${change.status} ${change.code} ${JSON.stringify(change.message)}`;

/** The mix of cycle i: alternating backends, every combination of legacy/v1 create and remove, and a 40 ms probing window after every other remove (else the next create follows at once). @param {number} i */
function mix(i) {
  return {
    backend: i % 2,
    create: /** @type {'legacy' | 'v1'} */ (Math.floor(i / 2) % 2 === 0 ? 'legacy' : 'v1'),
    remove: /** @type {'legacy' | 'v1'} */ (Math.floor(i / 4) % 2 === 0 ? 'legacy' : 'v1'),
    windowMs: i % 2 === 0 ? 40 : 0,
  };
}

/**
 * Create/remove cycles on `port` until `count` or `stop()`; outcomes and violations into the tallies.
 * @param {ReturnType<typeof api>} client @param {number} port @param {Backend[]} backends @param {number} count
 * @param {{ creates: Tally, afterCreate: Tally, afterRemove: Tally, violations: Tally, examples: string[] }} out
 */
async function cycles(client, port, backends, count, out, stop = () => false, offset = 0) {
  let done = 0;
  for (let i = 0; i < count && !stop(); i += 1) {
    const m = mix(i + offset);
    const backend = /** @type {Backend} */ (backends[m.backend]);
    done += 1;
    const created = await client.create(m.create, port, backend);
    out.creates.add(`${m.create} create ${created.ok ? 'ok' : created.code}`);
    if (!created.ok) {
      out.violations.add(`create refused ${created.code}`);
      if (out.examples.length < 10)
        out.examples.push(`port ${port} cycle ${i}: ${m.create} create answered ${said(created)}`);
      await client.remove('v1', port);
      continue;
    }
    for (const outcome of await probeAfter(port, 0)) {
      const good = outcome === `backend ${backend.name}`;
      out.afterCreate.add(good ? 'new backend' : outcome);
      if (!good) {
        out.violations.add(`after create: ${outcome}`);
        if (out.examples.length < 10)
          out.examples.push(
            `port ${port} cycle ${i}: after ${m.create} create of ${backend.name} answered ok, a new connection got ${outcome}`,
          );
      }
    }
    const removed = await client.remove(m.remove, port);
    if (!removed.ok) {
      out.violations.add(`remove failed ${removed.code}`);
      if (out.examples.length < 10)
        out.examples.push(`port ${port} cycle ${i}: ${m.remove} remove answered ${said(removed)}`);
      continue;
    }
    for (const outcome of await probeAfter(port, m.windowMs)) {
      out.afterRemove.add(outcome);
      if (outcome !== 'refused') {
        out.violations.add(`after remove: ${outcome}`);
        if (out.examples.length < 10)
          out.examples.push(
            `port ${port} cycle ${i}: after ${m.remove} remove answered ok, a new connection got ${outcome}`,
          );
      }
    }
  }
  return done;
}

const newOut = () => ({
  creates: new Tally(),
  afterCreate: new Tally(),
  afterRemove: new Tally(),
  violations: new Tally(),
  examples: /** @type {string[]} */ ([]),
});
const total = (/** @type {Tally} */ tally) => [...tally.counts.values()].reduce((a, b) => a + b, 0);

export async function run() {
  const cycleCount = setting('BENCH_PROMISES_CYCLES', 300);
  const churnClients = setting('BENCH_PROMISES_CHURN', 4);
  const putCount = setting('BENCH_PROMISES_PUTS', 200);
  const chaosClients = setting('BENCH_PROMISES_CLIENTS', 32);
  const chaosSeconds = setting('BENCH_PROMISES_SECONDS', 30);
  const chaosOps = setting('BENCH_PROMISES_OPS', 400);
  const chaosPorts = Math.max(1, setting('BENCH_PROMISES_PORTS', 8));
  const seed = setting('BENCH_PROMISES_SEED', Date.now() % 1_000_000);

  const backends = [await namedBackend('A'), await namedBackend('B'), await namedBackend('C')];
  // Ports: 0 the lone cycle port, 1 the cycle port beside churn, 2.. churn, then the PUT port, then chaos.
  const putOffset = 2 + churnClients;
  const chaosOffset = putOffset + 1;
  const daemon = await startDaemon({ rangeSize: chaosOffset + chaosPorts });
  const client = api(daemon.url);
  /** @type {string[][]} */
  const rows = [];
  /** @type {string[]} */
  const notes = [];
  let violations = 0;
  try {
    // 1. Cycles alone.
    const alone = newOut();
    const aloneDone = await cycles(client, daemon.base, backends, cycleCount, alone);
    rows.push([
      'create/remove cycles, one client',
      `${aloneDone} cycles`,
      `creates: ${alone.creates}`,
      `after create: ${alone.afterCreate}`,
      `after remove: ${alone.afterRemove}`,
      String(total(alone.violations)),
      alone.violations.toString() || '-',
    ]);
    violations += total(alone.violations);
    notes.push(...alone.examples.map((line) => `cycles alone: ${line}`));

    // 2. Cycles beside churn.
    const beside = newOut();
    const churn = newOut();
    let finished = false;
    const churners = Array.from({ length: churnClients }, (_, k) =>
      cycles(client, daemon.base + 2 + k, backends, cycleCount * 4, churn, () => finished, k + 1),
    );
    let besideDone = 0;
    try {
      besideDone = await cycles(client, daemon.base + 1, backends, cycleCount, beside);
    } finally {
      finished = true;
    }
    const churned = (await Promise.all(churners)).reduce((a, b) => a + b, 0);
    rows.push([
      `create/remove cycles beside ${churnClients} churning clients`,
      `${besideDone} cycles`,
      `creates: ${beside.creates}`,
      `after create: ${beside.afterCreate}`,
      `after remove: ${beside.afterRemove}`,
      String(total(beside.violations)),
      beside.violations.toString() || '-',
    ]);
    rows.push([
      `(the ${churnClients} churning clients)`,
      `${churned} cycles`,
      `creates: ${churn.creates}`,
      `after create: ${churn.afterCreate}`,
      `after remove: ${churn.afterRemove}`,
      String(total(churn.violations)),
      churn.violations.toString() || '-',
    ]);
    violations += total(beside.violations) + total(churn.violations);
    notes.push(
      ...beside.examples.map((line) => `cycles beside churn: ${line}`),
      ...churn.examples.slice(0, 5).map((line) => `churn: ${line}`),
    );

    // 3. PUT cycles beside churn.
    const putPort = daemon.base + putOffset;
    const puts = {
      answers: new Tally(),
      after: new Tally(),
      violations: new Tally(),
      examples: /** @type {string[]} */ ([]),
    };
    const putChurn = newOut();
    finished = false;
    const putChurners = Array.from({ length: Math.min(2, churnClients) }, (_, k) =>
      cycles(client, daemon.base + 2 + k, backends, putCount * 4, putChurn, () => finished, k),
    );
    let putsDone = 0;
    /** @type {import('node:net').Socket[]} */
    const sessions = [];
    try {
      const first = await client.replace(putPort, /** @type {Backend} */ (backends[0]));
      if (!first.ok) throw new Error(`first PUT: ${said(first)}`);
      let current = 0;
      let exists = true;
      for (let i = 0; i < putCount; i += 1) {
        const next = 1 - current;
        const backend = /** @type {Backend} */ (backends[next]);
        // Every fourth PUT follows a DELETE at once, and so creates the stream anew (201).
        if (i % 4 === 3) {
          const removed = await client.remove('v1', putPort);
          if (removed.ok) exists = false;
          else {
            puts.violations.add(`DELETE before PUT failed ${removed.code}`);
            if (puts.examples.length < 10) puts.examples.push(`DELETE before PUT ${i}: answered ${said(removed)}`);
          }
        }
        const answer = await client.replace(putPort, backend);
        putsDone += 1;
        // 201 when the PUT creates the stream (after the DELETE, or after a PUT that failed), else 200.
        puts.answers.add(`${exists ? 'replace' : 'create'} ${answer.status} ${answer.code}`);
        if (answer.status !== (exists ? 200 : 201)) {
          puts.violations.add(`PUT answered ${answer.status} ${answer.code}`);
          if (puts.examples.length < 10)
            puts.examples.push(`PUT ${i}: answered ${said(answer)}, not ${exists ? 200 : 201}`);
        }
        if (!answer.ok) continue;
        exists = true;
        current = next;
        for (const outcome of await probeAfter(putPort, 60)) {
          const good = outcome === `backend ${backend.name}`;
          puts.after.add(
            good ? 'new backend' : outcome === `backend ${backends[1 - next]?.name}` ? 'previous backend' : outcome,
          );
          if (!good) {
            puts.violations.add(`after PUT: ${outcome}`);
            if (puts.examples.length < 10)
              puts.examples.push(
                `PUT ${i} (-> ${backend.name}) answered ${answer.status}, a new connection got ${outcome}`,
              );
          }
        }
        // A session left open through this generation of workers (the last two are kept).
        const session = await openSession(putPort);
        if (session) sessions.push(session);
        while (sessions.length > 2) sessions.shift()?.destroy();
      }
    } finally {
      finished = true;
      for (const session of sessions) session.destroy();
    }
    await Promise.all(putChurners);
    await client.remove('v1', putPort);
    rows.push([
      `PUT replace cycles (every fourth after a DELETE, open sessions) beside ${Math.min(2, churnClients)} churning clients`,
      `${putsDone} PUTs`,
      `answers: ${puts.answers}`,
      `after PUT: ${puts.after}`,
      '-',
      String(total(puts.violations) + total(putChurn.violations)),
      [puts.violations.toString(), putChurn.violations.toString()].filter(Boolean).join('; ') || '-',
    ]);
    violations += total(puts.violations) + total(putChurn.violations);
    notes.push(...puts.examples.map((line) => `puts: ${line}`));

    // 4. Chaos.
    const ports = Array.from({ length: chaosPorts }, (_, k) => daemon.base + chaosOffset + k);
    let state = seed >>> 0;
    const random = () => {
      state = (state + 0x6d2b79f5) >>> 0;
      let t = state;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const pick = (/** @type {number} */ n) => Math.floor(random() * n);
    const kinds = ['legacy create', 'legacy remove', 'v1 POST', 'v1 PUT', 'v1 DELETE'];
    const statuses = new Tally();
    const chaosViolations = new Tally();
    const chaosExamples = /** @type {string[]} */ ([]);
    const deadline = Date.now() + chaosSeconds * 1000;
    let ops = 0;
    const chaosClient = async (/** @type {number} */ id) => {
      for (let n = 0; n < chaosOps && Date.now() < deadline; n += 1) {
        const kind = /** @type {string} */ (kinds[pick(kinds.length)]);
        const port = /** @type {number} */ (ports[pick(ports.length)]);
        const backend = /** @type {Backend} */ (backends[pick(backends.length)]);
        const answer =
          kind === 'legacy create'
            ? await client.create('legacy', port, backend)
            : kind === 'legacy remove'
              ? await client.remove('legacy', port)
              : kind === 'v1 POST'
                ? await client.create('v1', port, backend)
                : kind === 'v1 PUT'
                  ? await client.replace(port, backend)
                  : await client.remove('v1', port);
        ops += 1;
        statuses.add(`${kind} ${answer.status} ${answer.code}`);
        if (
          answer.status >= 500 ||
          answer.status === 0 ||
          answer.code === 'INTERNAL' ||
          answer.code === 'PORT_IN_USE'
        ) {
          chaosViolations.add(`${kind} ${answer.status} ${answer.code}`);
          if (chaosExamples.length < 10)
            chaosExamples.push(`client ${id}: ${kind} on ${port} answered ${said(answer)}`);
        }
      }
    };
    const chaosStarted = Date.now();
    await Promise.all(Array.from({ length: chaosClients }, (_, id) => chaosClient(id)));
    const chaosTook = (Date.now() - chaosStarted) / 1000;
    // The final state: each port exactly as listed.
    const listed = await client.list();
    const listening = new Set();
    for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
      for (const line of (await readFile(file, 'utf8').catch(() => '')).split('\n').slice(1)) {
        const fields = line.trim().split(/\s+/);
        if (fields[3] === '0A') listening.add(Number.parseInt((fields[1] ?? '').split(':')[1] ?? '0', 16));
      }
    }
    const final = new Tally();
    for (const port of ports) {
      const stream = listed.find((s) => s.port === port);
      const want = stream
        ? `backend ${backends.find((b) => b.address === stream.backends[0]?.address)?.name ?? stream.backends[0]?.address}`
        : 'refused';
      for (let k = 0; k < 5; k += 1) {
        const outcome = await probe(port);
        final.add(
          outcome === want
            ? stream
              ? 'listed, reaches its backend'
              : 'unlisted, refused'
            : `${stream ? 'listed' : 'unlisted'}: ${outcome}`,
        );
        if (outcome !== want) {
          chaosViolations.add(`final: ${stream ? 'listed' : 'unlisted'} port got ${outcome}`);
          if (chaosExamples.length < 10)
            chaosExamples.push(`final: port ${port} listed as ${want}, a connection got ${outcome}`);
        }
      }
      if (!stream && listening.has(port)) {
        chaosViolations.add('final: unlisted port has a listening socket');
        if (chaosExamples.length < 10)
          chaosExamples.push(`final: port ${port} is not listed but a socket listens on it`);
      }
    }
    rows.push([
      `chaos: ${chaosClients} clients on ${chaosPorts} ports, ${chaosSeconds} s or ${chaosOps} ops each (seed ${seed})`,
      `${ops} ops in ${chaosTook.toFixed(1)} s`,
      `answers: ${statuses}`,
      `final: ${final}`,
      '-',
      String(total(chaosViolations)),
      chaosViolations.toString() || '-',
    ]);
    violations += total(chaosViolations);
    notes.push(...chaosExamples.map((line) => `chaos: ${line}`));
    for (const port of ports) await client.remove('v1', port);
  } finally {
    await daemon.stop();
    for (const backend of backends) await backend.close();
  }
  return {
    title: `8. Promises under stress: ${cycleCount} create/remove cycles alone and beside churn, ${putCount} PUTs, chaos (${defaultMasters()} masters)`,
    target:
      'no violation: after a create or PUT answer new connections reach the new backend, after a remove answer they are refused, no PORT_IN_USE for our own port, no 5xx, final state as listed',
    holds: violations === 0,
    columns: [
      'phase',
      'done',
      'answers',
      'new connections after create / PUT',
      'new connections after remove',
      'violations',
      'violations by kind',
    ],
    rows,
    summary: `${violations} violations`,
    notes: notes.length > 0 ? ['Examples:', ...notes.map((line) => `- ${line}`)] : [],
  };
}
