// @ts-check
/**
 * The reads of a phase (getstreams, hasstream, getfreeport) against the model: each must match
 * every port whose state could not change while the read was in flight.
 */
import { FREE, UNKNOWN } from './state.mjs';
import { wall } from './util.mjs';

/** @typedef {import('./state.mjs').Phase} Phase */
/** @typedef {import('./state.mjs').Soak} Soak */

/**
 * The state of a port throughout [send, ack], or undefined when a mutation of it overlapped
 * that interval (or its state is unknown).
 * @param {Phase} phase
 * @param {number} offset
 * @param {number} send
 * @param {number} ack
 */
export function stableState(phase, offset, send, ack) {
  let state = phase.initial[offset] ?? UNKNOWN;
  for (const mutation of phase.timeline.get(offset) ?? []) {
    if (mutation.ack <= send) state = mutation.after;
    else if (mutation.send < ack) return undefined;
    else break;
  }
  return state === UNKNOWN ? undefined : state;
}

/**
 * @param {Soak} soak
 * Every read answered during the phase must match the ports that could not change meanwhile.
 * @param {Phase} phase
 */
export function checkReads(soak, phase) {
  let failures = 0;
  const start = soak.daemon.start;
  for (const read of phase.reads) {
    if (read.kind === 'getstreams' && read.ports && read.backends) {
      /** @type {Map<number, number>} */
      const listed = new Map();
      for (let i = 0; i < read.ports.length; i += 1)
        listed.set(/** @type {number} */ (read.ports[i]), /** @type {number} */ (read.backends[i]));
      /** @type {string[]} */
      const wrong = [];
      for (let offset = 0; offset < soak.size; offset += 1) {
        const state = stableState(phase, offset, read.send, read.ack);
        if (state === undefined) continue;
        phase.readChecks += 1;
        const got = listed.get(start + offset);
        if (state === FREE && got !== undefined) wrong.push(`${start + offset} listed but had no stream`);
        else if (state >= 0 && got === undefined)
          wrong.push(`${start + offset} missing (stream to ${soak.backendAddress(state)})`);
        else if (state >= 0 && got !== state) wrong.push(`${start + offset} listed to the wrong backend`);
      }
      if (wrong.length > 0) {
        failures += 1;
        soak.fail(
          phase,
          'read',
          `/getstreams answered between ${wall(read.send)} and ${wall(read.ack)} disagrees on ports whose state could not change meanwhile: ${wrong.slice(0, 10).join('; ')}${wrong.length > 10 ? ` ... (${wrong.length})` : ''}`,
          { send: read.send, ack: read.ack },
        );
      }
    } else if (read.kind === 'hasstream' && read.port !== undefined) {
      const state = stableState(phase, read.port - start, read.send, read.ack);
      if (state !== undefined) phase.readChecks += 1;
      if (state !== undefined && state >= 0 !== read.value) {
        failures += 1;
        soak.fail(
          phase,
          'read',
          `/hasstream/${read.port} answered ${read.value} but the port ${state >= 0 ? 'had' : 'had no'} stream throughout the request`,
          { port: read.port, send: read.send, ack: read.ack },
        );
      }
    } else if (read.kind === 'getfreeport' && read.port !== undefined) {
      if (Number.isNaN(read.port)) {
        let freeThroughout = 0;
        for (let offset = 0; offset < soak.size; offset += 1)
          if (stableState(phase, offset, read.send, read.ack) === FREE) freeThroughout += 1;
        if (freeThroughout > 0) {
          failures += 1;
          soak.fail(
            phase,
            'read',
            `/getfreeport answered "none available" while ${freeThroughout} ports had no stream throughout the request`,
            { send: read.send, ack: read.ack },
          );
        }
      } else {
        const state = stableState(phase, read.port - start, read.send, read.ack);
        if (state !== undefined) phase.readChecks += 1;
        if (state !== undefined && state >= 0) {
          failures += 1;
          soak.fail(
            phase,
            'read',
            `/getfreeport answered port ${read.port}, which had a stream throughout the request`,
            { port: read.port, send: read.send, ack: read.ack },
          );
        }
      }
    }
  }
  return failures;
}
