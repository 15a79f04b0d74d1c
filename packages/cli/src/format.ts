/** Small text formats for people: sizes, durations, ages. */
import { printable } from '@stream-conductor/shared';

/**
 * A copy of an answer with every string in it safe to print on a terminal (control characters
 * escaped): what a person reads may carry text from other hosts of a fleet or from the audit log.
 */
export function safeForTerminal<T>(value: T): T {
  if (typeof value === 'string') return printable(value, Number.MAX_SAFE_INTEGER) as T;
  if (Array.isArray(value)) return value.map((item: unknown) => safeForTerminal(item)) as T;
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value).map(([key, item]) => [printable(key, Number.MAX_SAFE_INTEGER), safeForTerminal(item)]),
    ) as T;
  }
  return value;
}

export function bytes(value: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let amount = value;
  let unit = 0;
  while (amount >= 1024 && unit < units.length - 1) {
    amount /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${amount} B` : `${amount.toFixed(amount < 10 ? 1 : 0)} ${units[unit]}`;
}

export function rate(bytesPerSecond: number): string {
  return `${bytes(Math.round(bytesPerSecond))}/s`;
}

export function duration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, '0')}h`;
}

/** How long ago an ISO time was, from `now`. */
export function ago(iso: string | undefined, now: Date): string {
  if (iso === undefined) return '-';
  return `${duration((now.getTime() - Date.parse(iso)) / 1000)} ago`;
}
