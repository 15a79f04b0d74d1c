// @ts-check
/**
 * The run's state: what the acknowledged answers imply for every port (the model), the phases run
 * so far with what they measured, and the violations found. Load generation (load.mjs) and the
 * checks (checks.mjs) both read and write it.
 */
import { LogReader } from './logs.mjs';

/** @typedef {import('./daemon.mjs').Daemon} Daemon */
/** @typedef {import('./net.mjs').EchoBackend} EchoBackend */
/** @typedef {import('./options.mjs').Options} Options */

/** A port's model state: no stream. (A stream's state is its backend's index, 0 or more.) */
export const FREE = -1;
/** A port's model state: a request about it got no answer, so nobody knows. */
export const UNKNOWN = -2;
/** How many identical requests a race sends at once. */
export const RACE = 4;
/** Violations kept in detail; the others are only counted. */
const MAX_DETAILS = 200;

/**
 * @typedef {object} StatusReport what the soak reads of /v1/status
 * @property {{ failed?: number }} [streams]
 * @property {{ state?: string, restarts?: number }} [nginx] every master together
 * @property {Array<{ id: number, state: string, restarts: number, workers?: number, drainingWorkers?: number }>} [nginxInstances] each master
 */

/**
 * @typedef {object} Violation
 * @property {number} phase
 * @property {string} check
 * @property {string} message
 * @property {number} [port]
 * @property {number} [send]
 * @property {number} [ack]
 */

/**
 * @typedef {object} Mutation one request (or race group) that may change a port
 * @property {number} send
 * @property {number} ack
 * @property {number} after the model state once answered (backend index, FREE or UNKNOWN)
 */

/**
 * @typedef {object} Read
 * @property {'getstreams' | 'hasstream' | 'getfreeport'} kind
 * @property {number} send
 * @property {number} ack
 * @property {Int32Array} [ports] getstreams: listed ports
 * @property {Int8Array} [backends] getstreams: backend index per listed port
 * @property {number} [port] hasstream: asked port; getfreeport: answered port (NaN: none)
 * @property {boolean} [value] hasstream: the answer
 */

/**
 * @typedef {object} KindStats
 * @property {number[]} latencies ms
 * @property {Map<string, number>} outcomes
 */

/**
 * @typedef {object} PhaseMetrics
 * @property {number} daemonRssKiB after a full GC (unless --raw-rss)
 * @property {number} heapUsedKiB JS heap used after the full GC (NaN with --raw-rss)
 * @property {number} peakRssKiB highest RSS seen while the phase ran (sampled every second)
 * @property {number} daemonFds
 * @property {number} nginxProcesses
 * @property {number} nginxRssKiB
 * @property {number} live
 * @property {number} nginxRestarts
 */

/**
 * @typedef {object} Phase
 * @property {number} n
 * @property {number} target
 * @property {number} issued
 * @property {number} done
 * @property {number} started
 * @property {number} ended
 * @property {Int8Array} initial
 * @property {Map<number, Mutation[]>} timeline by port offset
 * @property {Read[]} reads
 * @property {Map<string, KindStats>} stats
 * @property {number} fiveHundreds
 * @property {number} transportErrors
 * @property {number} retries
 * @property {number} unexpected
 * @property {PhaseMetrics | undefined} metrics
 * @property {{ applies: number, requests: number, applied: number, refused: number, attempts: number, applyMs: number[], requestLines: number, warn: number, error: number }} log
 * @property {number} nginxErrorLogLines
 * @property {string[]} checks passed/failed check names
 * @property {number} violations
 * @property {number} readChecks (read, port) pairs whose port could not change during the read, checked
 * @property {number} peakRssKiB
 */

export class Soak {
  /**
   * @param {Options} options
   * @param {Daemon} daemon
   * @param {EchoBackend[]} backends
   */
  constructor(options, daemon, backends) {
    this.options = options;
    this.daemon = daemon;
    this.backends = backends;
    this.size = daemon.end - daemon.start + 1;
    /** Expected state per port offset: backend index, FREE or UNKNOWN. */
    this.model = new Int8Array(this.size).fill(FREE);
    /** @type {Violation[]} */
    this.violations = [];
    this.violationCount = 0;
    /** @type {Phase[]} */
    this.phases = [];
    this.deadlineAt = Date.now() + options.deadlineMin * 60_000;
    this.aborted = false;
    this.deadlineHit = false;
    /** What the daemon and its nginx masters logged. */
    this.logs = new LogReader(daemon);
    /** @type {string[] | undefined} daemon log lines around the first violations */
    this.relatedLog = undefined;
  }

  running() {
    if (this.aborted) return false;
    if (Date.now() >= this.deadlineAt) {
      this.deadlineHit = true;
      return false;
    }
    return true;
  }

  /**
   * @param {Phase | undefined} phase
   * @param {string} check
   * @param {string} message
   * @param {Partial<Violation>} [extra]
   */
  fail(phase, check, message, extra = {}) {
    this.violationCount += 1;
    if (phase) phase.violations += 1;
    if (this.violations.length < MAX_DETAILS) this.violations.push({ phase: phase?.n ?? 0, check, message, ...extra });
  }

  /** @param {number} offset */
  owner(offset) {
    return offset % this.options.clients;
  }

  /** @param {number} index */
  backendAddress(index) {
    return /** @type {EchoBackend} */ (this.backends[index]).address;
  }

  /** @param {string} address */
  backendIndex(address) {
    return this.backends.findIndex((backend) => backend.address === address);
  }
}
