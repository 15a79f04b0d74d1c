// @ts-check
/**
 * Load generation: the concurrent clients of one phase, each mutating only the ports it owns and
 * reading globally, every answer predicted from the model before it arrives and recorded.
 */
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { get, outcomeOf } from './api.mjs';
import { rssKiB } from './host.mjs';
import { FREE, RACE, UNKNOWN } from './state.mjs';
import { pick, progress, rng } from './util.mjs';

/** @typedef {import('./api.mjs').Answer} Answer */
/** @typedef {import('./state.mjs').Mutation} Mutation */
/** @typedef {import('./state.mjs').Phase} Phase */
/** @typedef {import('./state.mjs').Soak} Soak */

export class Load {
  /** @param {Soak} soak */
  constructor(soak) {
    this.soak = soak;
  }

  /**
   * Runs phase `n`: every client until the phase has issued its requests or time is up.
   * @param {number} n
   */
  async runPhase(n) {
    /** @type {Phase} */
    const phase = {
      n,
      target: this.soak.options.ops,
      issued: 0,
      done: 0,
      started: performance.now(),
      ended: 0,
      initial: Int8Array.from(this.soak.model),
      timeline: new Map(),
      reads: [],
      stats: new Map(),
      fiveHundreds: 0,
      transportErrors: 0,
      retries: 0,
      unexpected: 0,
      metrics: undefined,
      log: {
        applies: 0,
        requests: 0,
        applied: 0,
        refused: 0,
        attempts: 0,
        applyMs: [],
        requestLines: 0,
        warn: 0,
        error: 0,
      },
      nginxErrorLogLines: 0,
      checks: [],
      violations: 0,
      readChecks: 0,
      peakRssKiB: 0,
    };
    this.soak.phases.push(phase);
    const agent = new http.Agent({ keepAlive: true, maxSockets: this.soak.options.clients, timeout: 2000 });
    const ticker = setInterval(() => progress(`phase ${n}: ${phase.done}/${phase.target} requests`), 10_000);
    const sampler = setInterval(() => {
      void rssKiB(this.soak.daemon.pid).then((rss) => {
        phase.peakRssKiB = Math.max(phase.peakRssKiB, rss);
      });
    }, 1000);
    try {
      await Promise.all(
        Array.from({ length: this.soak.options.clients }, (_, index) => this.client(phase, agent, index)),
      );
    } finally {
      clearInterval(ticker);
      clearInterval(sampler);
      agent.destroy();
    }
    phase.ended = performance.now();
    return phase;
  }

  /**
   * @param {Phase} phase
   * @param {string} kind
   * @param {Answer} answer
   */
  record(phase, kind, answer) {
    let stats = phase.stats.get(kind);
    if (!stats) {
      stats = { latencies: [], outcomes: new Map() };
      phase.stats.set(kind, stats);
    }
    stats.latencies.push(answer.ack - answer.send);
    const outcome = outcomeOf(answer);
    stats.outcomes.set(outcome, (stats.outcomes.get(outcome) ?? 0) + 1);
    phase.done += 1;
    phase.retries += answer.retries;
    if (answer.error !== undefined) {
      phase.transportErrors += 1;
      this.soak.fail(phase, 'transport', `${kind}: no HTTP answer (${answer.error})`, {
        send: answer.send,
        ack: answer.ack,
      });
    } else if (answer.status >= 500) {
      phase.fiveHundreds += 1;
      this.soak.fail(phase, '5xx', `${kind}: HTTP ${answer.status} ${answer.text.slice(0, 300)}`, {
        send: answer.send,
        ack: answer.ack,
      });
    }
    return outcome;
  }

  /**
   * @param {Phase} phase
   * @param {number} offset
   * @param {Mutation} mutation
   */
  addMutation(phase, offset, mutation) {
    const list = phase.timeline.get(offset);
    if (list) list.push(mutation);
    else phase.timeline.set(offset, [mutation]);
  }

  /**
   * One client: one request at a time until the phase has issued its requests or time is up.
   * @param {Phase} phase
   * @param {http.Agent} agent
   * @param {number} index
   */
  async client(phase, agent, index) {
    const random = rng(this.soak.options.seed + 7919 * (index + 1) + 104_729 * phase.n);
    /** @type {number[]} */
    const owned = [];
    for (let offset = index; offset < this.soak.size; offset += this.soak.options.clients) owned.push(offset);
    const kinds = /** @type {const} */ ([
      ['create', 0.33],
      ['create-bad', 0.02],
      ['race-create', 0.02],
      ['remove', 0.28],
      ['race-remove', 0.02],
      ['getstreams', 0.13],
      ['getfreeport', 0.13],
      ['hasstream', 0.07],
    ]);
    // Bounded: every turn issues at least one request of a finite budget, or ends the loop.
    while (this.soak.running() && phase.issued < phase.target) {
      const roll = random();
      let sum = 0;
      /** @type {string} */
      let kind = 'hasstream';
      for (const [name, share] of kinds) {
        sum += share;
        if (roll < sum) {
          kind = name;
          break;
        }
      }
      if (owned.length === 0 && ['create', 'remove', 'race-create', 'race-remove'].includes(kind)) kind = 'getstreams';
      if (kind.startsWith('race-')) {
        const wantLive = kind === 'race-remove';
        const candidates = owned.filter(
          (offset) => (this.soak.model[offset] ?? FREE) >= 0 === wantLive && this.soak.model[offset] !== UNKNOWN,
        );
        if (candidates.length === 0 || phase.issued + RACE > phase.target) kind = wantLive ? 'remove' : 'create';
        else {
          phase.issued += RACE;
          await this.race(phase, agent, wantLive ? 'remove' : 'create', pick(random, candidates), random);
          continue;
        }
      }
      phase.issued += 1;
      switch (kind) {
        case 'create':
          await this.create(phase, agent, pick(random, owned), random() < 0.5 ? 0 : 1);
          break;
        case 'create-bad':
          await this.createBad(
            phase,
            agent,
            owned.length > 0 && random() < 0.75 ? pick(random, owned) : undefined,
            random,
          );
          break;
        case 'remove':
          await this.remove(phase, agent, pick(random, owned));
          break;
        case 'getstreams':
          await this.getstreams(phase, agent);
          break;
        case 'getfreeport':
          await this.getfreeport(phase, agent);
          break;
        default:
          await this.hasstream(phase, agent, Math.floor(random() * this.soak.size));
      }
    }
  }

  /**
   * @param {string} path
   * @param {http.Agent} agent
   */
  call(path, agent) {
    const timeout = this.soak.options.requestTimeoutMs;
    return get(agent, this.soak.daemon.apiPort, path, timeout);
  }

  /**
   * Reports an answer that is not the one the model predicts.
   * @param {Phase} phase
   * @param {string} kind
   * @param {number} port
   * @param {string} path
   * @param {string} expected
   * @param {Answer} answer
   */
  unexpected(phase, kind, port, path, expected, answer) {
    phase.unexpected += 1;
    this.soak.fail(
      phase,
      'answer',
      `${kind} ${path}: expected ${expected}, got HTTP ${answer.status} ${answer.error ?? answer.text.slice(0, 300)}`,
      {
        port,
        send: answer.send,
        ack: answer.ack,
      },
    );
  }

  /**
   * @param {Answer} answer
   * @returns {Record<string, unknown>}
   */
  body(answer) {
    return typeof answer.json === 'object' && answer.json !== null && !Array.isArray(answer.json)
      ? /** @type {Record<string, unknown>} */ (answer.json)
      : {};
  }

  /**
   * @param {Phase} phase
   * @param {http.Agent} agent
   * @param {number} offset
   * @param {number} backend
   */
  async create(phase, agent, offset, backend) {
    const port = this.soak.daemon.start + offset;
    const before = this.soak.model[offset] ?? UNKNOWN;
    const path = `/createstream/${port}/${this.soak.backendAddress(backend)}`;
    const answer = await this.call(path, agent);
    const outcome = this.record(phase, 'create', answer);
    const body = this.body(answer);
    let after = before;
    if (answer.error !== undefined || answer.status >= 500) after = UNKNOWN;
    else if (outcome === 'ok') after = backend;
    if (before === FREE && !(outcome === 'ok' && body.errors === ''))
      this.unexpected(phase, 'create', port, path, '{"result": "ok", "errors": ""} (the port had no stream)', answer);
    if (
      before >= 0 &&
      !(
        outcome === 'exists' &&
        String(body.errors).startsWith(`port ${port} already has a stream (to ${this.soak.backendAddress(before)})`)
      )
    ) {
      this.unexpected(
        phase,
        'create',
        port,
        path,
        `"port ${port} already has a stream (to ${this.soak.backendAddress(before)})"`,
        answer,
      );
    }
    this.soak.model[offset] = after;
    this.addMutation(phase, offset, { send: answer.send, ack: answer.ack, after });
  }

  /**
   * A create the daemon must refuse without changing anything: a backend that is not host:port
   * (nginx syntax in it), or a port outside the range.
   * @param {Phase} phase
   * @param {http.Agent} agent
   * @param {number | undefined} offset undefined: a port outside the range
   * @param {() => number} random
   */
  async createBad(phase, agent, offset, random) {
    const bad = [
      'a:1;proxy_timeout%201s',
      'x:0',
      'x:70000',
      'x%7Binclude%7D:1',
      'unix:%2Ftmp%2Fs',
      '127.0.0.1',
      '[zz]:1',
      'a$b:1',
    ];
    const port = offset === undefined ? this.soak.daemon.start - 1 : this.soak.daemon.start + offset;
    const path =
      offset === undefined
        ? `/createstream/${port}/${this.soak.backendAddress(0)}`
        : `/createstream/${port}/${pick(random, bad)}`;
    const before = offset === undefined ? FREE : (this.soak.model[offset] ?? UNKNOWN);
    const answer = await this.call(path, agent);
    const outcome = this.record(phase, 'create-bad', answer);
    const expected = offset === undefined ? 'out of range' : 'invalid input';
    if (outcome !== expected)
      this.unexpected(phase, 'create-bad', port, path, `a refusal (${expected}) that changes nothing`, answer);
    if (offset !== undefined) {
      const after = answer.error !== undefined || answer.status >= 500 ? UNKNOWN : before;
      this.soak.model[offset] = after;
      this.addMutation(phase, offset, { send: answer.send, ack: answer.ack, after });
    }
  }

  /**
   * @param {Phase} phase
   * @param {http.Agent} agent
   * @param {number} offset
   */
  async remove(phase, agent, offset) {
    const port = this.soak.daemon.start + offset;
    const before = this.soak.model[offset] ?? UNKNOWN;
    const path = `/removestream/${port}`;
    const answer = await this.call(path, agent);
    const outcome = this.record(phase, 'remove', answer);
    const body = this.body(answer);
    let after = before;
    if (answer.error !== undefined || answer.status >= 500) after = UNKNOWN;
    else if (outcome === 'ok') after = FREE;
    if (before >= 0 && !(outcome === 'ok' && body.errors === ''))
      this.unexpected(phase, 'remove', port, path, '{"result": "ok", "errors": ""} (the port had a stream)', answer);
    if (before === FREE && answer.text !== '{"result": "error", "error": "not found"}')
      this.unexpected(phase, 'remove', port, path, '{"result": "error", "error": "not found"}', answer);
    this.soak.model[offset] = after;
    this.addMutation(phase, offset, { send: answer.send, ack: answer.ack, after });
  }

  /**
   * RACE identical creates (or removes) of one owned port at once: exactly one wins, the others
   * are told the port already has a stream (is not found).
   * @param {Phase} phase
   * @param {http.Agent} agent
   * @param {'create' | 'remove'} what
   * @param {number} offset
   * @param {() => number} random
   */
  async race(phase, agent, what, offset, random) {
    const port = this.soak.daemon.start + offset;
    const backend = random() < 0.5 ? 0 : 1;
    const path =
      what === 'create' ? `/createstream/${port}/${this.soak.backendAddress(backend)}` : `/removestream/${port}`;
    const answers = await Promise.all(Array.from({ length: RACE }, () => this.call(path, agent)));
    const outcomes = answers.map((answer) => this.record(phase, `race-${what}`, answer));
    const wins = outcomes.filter((outcome) => outcome === 'ok').length;
    const loserOutcome = what === 'create' ? 'exists' : 'not found';
    const losers = outcomes.filter((outcome) => outcome === loserOutcome).length;
    const broken = answers.some((answer) => answer.error !== undefined || answer.status >= 500);
    let after = broken ? UNKNOWN : (this.soak.model[offset] ?? UNKNOWN);
    if (!broken && wins === 1) after = what === 'create' ? backend : FREE;
    if (wins !== 1 || losers !== RACE - 1) {
      phase.unexpected += 1;
      this.soak.fail(
        phase,
        'race',
        `${RACE} x ${path} at once: expected exactly 1 ok and ${RACE - 1} "${loserOutcome}", got ${outcomes.join(' / ')}`,
        {
          port,
          send: Math.min(...answers.map((answer) => answer.send)),
          ack: Math.max(...answers.map((answer) => answer.ack)),
        },
      );
      if (!broken && wins !== 1) after = UNKNOWN;
    }
    this.soak.model[offset] = after;
    this.addMutation(phase, offset, {
      send: Math.min(...answers.map((a) => a.send)),
      ack: Math.max(...answers.map((a) => a.ack)),
      after,
    });
  }

  /**
   * @param {Phase} phase
   * @param {http.Agent} agent
   */
  async getstreams(phase, agent) {
    const answer = await this.call('/getstreams', agent);
    this.record(phase, 'getstreams', answer);
    if (answer.error !== undefined || answer.status !== 200) return;
    if (!Array.isArray(answer.json)) {
      this.unexpected(phase, 'getstreams', 0, '/getstreams', 'a JSON array', answer);
      return;
    }
    const ports = new Int32Array(answer.json.length);
    const backends = new Int8Array(answer.json.length);
    const seen = new Set();
    answer.json.forEach((item, i) => {
      const { listen, proxy_pass: proxyPass } = /** @type {{ listen?: unknown, proxy_pass?: unknown }} */ (item ?? {});
      const port = typeof listen === 'number' ? listen : NaN;
      const backend = typeof proxyPass === 'string' ? this.soak.backendIndex(proxyPass) : -1;
      if (
        !Number.isInteger(port) ||
        port < this.soak.daemon.start ||
        port > this.soak.daemon.end ||
        backend < 0 ||
        seen.has(port)
      ) {
        this.soak.fail(
          phase,
          'getstreams',
          `entry ${JSON.stringify(item)} is outside the range, duplicated, or names no backend of this soak`,
          { send: answer.send, ack: answer.ack },
        );
      }
      seen.add(port);
      ports[i] = port;
      backends[i] = backend;
    });
    phase.reads.push({ kind: 'getstreams', send: answer.send, ack: answer.ack, ports, backends });
  }

  /**
   * @param {Phase} phase
   * @param {http.Agent} agent
   */
  async getfreeport(phase, agent) {
    const answer = await this.call('/getfreeport', agent);
    const outcome = this.record(phase, 'getfreeport', answer);
    if (answer.error !== undefined || answer.status !== 200) return;
    const body = this.body(answer);
    if (outcome === 'none available') {
      phase.reads.push({ kind: 'getfreeport', send: answer.send, ack: answer.ack, port: NaN });
      return;
    }
    const port = body.port;
    if (outcome !== 'ok' || typeof port !== 'number' || port < this.soak.daemon.start || port > this.soak.daemon.end) {
      this.unexpected(
        phase,
        'getfreeport',
        0,
        '/getfreeport',
        '{"result": "ok", "port": <a port of the range>}',
        answer,
      );
      return;
    }
    phase.reads.push({ kind: 'getfreeport', send: answer.send, ack: answer.ack, port });
  }

  /**
   * @param {Phase} phase
   * @param {http.Agent} agent
   * @param {number} offset
   */
  async hasstream(phase, agent, offset) {
    const port = this.soak.daemon.start + offset;
    const answer = await this.call(`/hasstream/${port}`, agent);
    this.record(phase, 'hasstream', answer);
    if (answer.error !== undefined || answer.status !== 200) return;
    const result = this.body(answer).result;
    if (result !== 'true' && result !== 'false') {
      this.unexpected(
        phase,
        'hasstream',
        port,
        `/hasstream/${port}`,
        '{"result": "true"} or {"result": "false"}',
        answer,
      );
      return;
    }
    phase.reads.push({ kind: 'hasstream', send: answer.send, ack: answer.ack, port, value: result === 'true' });
  }
}
