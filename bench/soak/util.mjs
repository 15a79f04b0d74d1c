// @ts-check
/** Small helpers of the soak: sleep, progress lines, a seeded PRNG, percentiles, formatting. */
import { performance } from 'node:perf_hooks';

/** @param {number} ms */
export const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

/** @param {string} text */
export const progress = (text) => process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${text}\n`);

/** Seeded PRNG (mulberry32): the operation mix is reproducible with --seed, timing is not. */
/** @param {number} seed */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * @template T
 * @param {() => number} random
 * @param {T[]} items
 * @returns {T}
 */
export function pick(random, items) {
  return /** @type {T} */ (items[Math.floor(random() * items.length)]);
}

/**
 * Nearest-rank percentile of an ascending array.
 * @param {number[]} sorted
 * @param {number} p
 */
export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return /** @type {number} */ (
    sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]
  );
}

/** @param {number} ms */
export const wall = (ms) => new Date(performance.timeOrigin + ms).toISOString();

/** @param {number[]} ports */
export function portList(ports, max = 20) {
  const sorted = [...ports].sort((a, b) => a - b);
  return sorted.length <= max ? sorted.join(', ') : `${sorted.slice(0, max).join(', ')} ... (${sorted.length} in all)`;
}

/** @param {number} n */
export const fmt = (n, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : '-');
