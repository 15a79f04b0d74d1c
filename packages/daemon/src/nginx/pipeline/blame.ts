/**
 * Blame: which streams nginx's refusal names. nginx says what it could not take in its error
 * lines, by the file and line of a stream's configuration or by the port it could not bind; the
 * daemon refuses those streams with nginx's message and tries the rest again, so one bad request
 * never sinks the good ones in its batch.
 */
import { ConductorError, ErrorCode } from '@stream-conductor/shared';
import { type NginxLogLine, withoutPaths } from '../binary.js';
import type { StreamFileSet } from '../stream-files.js';
import { coverOf } from './ranges.js';
import type { Accepted, Attempt, Entry } from './types.js';

/** Finds the port of the stream whose file holds a line. */
export type PortLocator = Pick<StreamFileSet, 'portAt'>;

/** The port an nginx message blames: the stream at the file and line it names, or a listen it could not bind. */
export function portBlamed(line: NginxLogLine, files: PortLocator): number | undefined {
  const file = / in (\/\S+):([0-9]+)$/.exec(line.text);
  if (file?.[1] !== undefined) {
    const port = files.portAt(file[1], Number(file[2]));
    if (port !== undefined) return port;
  }
  const bind = /bind\(\) to (?:\S+:)?([0-9]+)(?: udp)? failed/.exec(line.text);
  return bind?.[1] === undefined ? undefined : Number(bind[1]);
}

export interface Refusal {
  /** nginx's error lines. */
  lines: NginxLogLine[];
  /** nginx's message, for a refusal that blames no stream. */
  message: string;
  /** The error code of a refusal that names no culprit. */
  code: ErrorCode;
}

/**
 * What nginx's refusal of `accepted` means: the created or replaced streams it names are the
 * culprits; a live stream outside the change that it names fatally is a bystander (to be set
 * aside); when it names none, the whole change is refused with its message.
 */
export function blame(
  refusal: Refusal,
  accepted: Accepted[],
  entries: ReadonlyMap<number, Entry>,
  files: PortLocator,
): Attempt {
  const { lines, message, code } = refusal;
  const creating = new Set(accepted.filter((one) => one.next).map((one) => one.port));
  const touched = new Set(accepted.map((one) => one.port));
  const culprits = new Map<number, ConductorError>();
  const bystanders = new Map<number, string>();
  // A port nginx could not bind may be inside a range: the stream to blame is keyed by its first port.
  const changing = coverOf(new Map(accepted.flatMap((one) => (one.next ? [[one.port, one.next] as const] : []))));
  const standing = coverOf(entries);
  const keyOf = (port: number | undefined): number | undefined =>
    port === undefined ? undefined : ((changing.get(port) ?? standing.get(port))?.record.port ?? port);
  for (const line of lines) {
    const port = keyOf(portBlamed(line, files));
    const fatal = line.level === 'emerg' || line.level === 'alert';
    if (
      fatal &&
      port !== undefined &&
      !touched.has(port) &&
      entries.get(port)?.state === 'live' &&
      !bystanders.has(port)
    ) {
      bystanders.set(port, `nginx: ${withoutPaths(line.text)}`);
      continue;
    }
    if (port === undefined || !creating.has(port) || culprits.has(port)) continue;
    const inUse = /Address already in use/.test(line.text);
    culprits.set(
      port,
      new ConductorError(
        inUse ? ErrorCode.PortInUse : code,
        `nginx refused the stream on port ${describeKey(port, accepted)}: ${withoutPaths(line.text)}`,
        {
          hint: inUse ? 'another process took the port' : undefined,
        },
      ),
    );
  }
  if (culprits.size > 0 || bystanders.size > 0) return { kind: 'culprits', culprits, bystanders };
  const prefix = code === ErrorCode.NginxUnavailable ? 'nginx is not available' : 'nginx refused the change';
  return { kind: 'all', error: new ConductorError(code, `${prefix}: ${withoutPaths(message)}`) };
}

/** A stream's port as an answer names it: a range as FIRST-LAST. */
function describeKey(port: number, accepted: Accepted[]): string {
  const record = accepted.find((one) => one.port === port)?.next?.record;
  return record?.portEnd === undefined ? String(port) : `${port}-${record.portEnd}`;
}

/** At start-up: the live streams nginx's lines name, each with nginx's reason (without paths). */
export function blamedAtStart(
  lines: NginxLogLine[],
  entries: ReadonlyMap<number, Entry>,
  files: PortLocator,
): Map<number, string> {
  const blamed = new Map<number, string>();
  const cover = coverOf(entries);
  for (const line of lines) {
    const named = portBlamed(line, files);
    const port = named === undefined ? undefined : (cover.get(named)?.record.port ?? named);
    if (port !== undefined && entries.get(port)?.state === 'live' && !blamed.has(port))
      blamed.set(port, withoutPaths(line.text));
  }
  return blamed;
}
