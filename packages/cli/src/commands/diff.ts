/**
 * `conductor diff -f FILE`: what `apply -f FILE` would change, as a readable plan, field by field,
 * with nothing applied. The daemon plans it (a dry-run apply, so the plan is the one apply would
 * carry out); the fields come from comparing the file's streams with the daemon's listing.
 * Exit 0: nothing would change; 1: something would; 2: an error.
 */
import {
  type ApplyResult,
  describeStreamBackends,
  formatDuration,
  formatPorts,
  formatRate,
  parseStreamInput,
  printable,
  type StreamSpec,
  type StreamView,
} from '@stream-conductor/shared';
import type { ApiClient } from '../client.js';
import type { Output } from '../output.js';
import { printData } from '../output-formats.js';

export const DIFF_EXIT = { same: 0, differs: 1, error: 2 } as const;

export interface StreamDiff {
  port: number;
  action: 'create' | 'update' | 'delete';
  /** update: each field that changes, as `field: before -> after`. */
  changes: string[];
  /** create and delete: the stream in one line. */
  summary?: string;
}

export interface DiffResult {
  plan: ApplyResult['plan'];
  diffs: StreamDiff[];
}

/** The fields a person compares, each shown in one short form. */
const FIELDS: Array<[string, (stream: StreamSpec) => string]> = [
  ['ports', (stream) => formatPorts(stream)],
  ['protocol', (stream) => stream.protocol],
  ['backends', (stream) => describeStreamBackends(stream)],
  ['balance', (stream) => stream.balance],
  ['allow', (stream) => (stream.allow.length === 0 ? 'everyone' : [...stream.allow].sort().join(', '))],
  ['listenAddress', (stream) => stream.listenAddress ?? '-'],
  ['connectTimeout', (stream) => duration(stream.connectTimeoutMs)],
  ['idleTimeout', (stream) => duration(stream.idleTimeoutMs)],
  ['proxyProtocol', (stream) => (stream.proxyProtocol ? 'on' : 'off')],
  ['profile', (stream) => stream.profile ?? 'default'],
  ['maxConnections', (stream) => String(stream.maxConnections ?? '-')],
  ['maxConnectionsPerClient', (stream) => String(stream.maxConnectionsPerClient ?? '-')],
  ['uploadRate', (stream) => rate(stream.uploadRate)],
  ['downloadRate', (stream) => rate(stream.downloadRate)],
  ['tlsCert', (stream) => stream.tlsCert ?? '-'],
  ['tlsKey', (stream) => stream.tlsKey ?? '-'],
  ['backendTls', (stream) => (stream.backendTls === true ? 'on' : 'off')],
  ['backendCa', (stream) => stream.backendCa ?? '-'],
  ['backendName', (stream) => stream.backendName ?? '-'],
  ['backendVerify', (stream) => (stream.backendVerify === false ? 'off' : 'on')],
  [
    'labels',
    (stream) =>
      Object.entries(stream.labels)
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([key, value]) => `${key}=${value}`)
        .join(',') || '-',
  ],
  ['description', (stream) => (stream.description === undefined ? '-' : JSON.stringify(stream.description))],
  ['expiresAt', (stream) => stream.expiresAt ?? 'never'],
];

const duration = (ms: number | undefined): string => (ms === undefined ? 'nginx default' : formatDuration(ms));
const rate = (bytes: number | undefined): string => (bytes === undefined ? '-' : formatRate(bytes));

/** The fields that differ between the stream the daemon has and the one the file wants. */
export function fieldChanges(current: StreamView, wanted: StreamSpec): string[] {
  const changes = FIELDS.flatMap(([field, show]) => {
    const before = show(current);
    const after = show(wanted);
    return before === after ? [] : [`${field}: ${before} -> ${after}`];
  });
  // Planned although the definition is the same: the daemon holds it but does not serve it.
  if (changes.length === 0 && current.state !== 'live')
    changes.push(`state: ${current.state}${current.reason ? ` (${current.reason})` : ''} -> live`);
  return changes;
}

/** Asks the daemon for the plan (a dry run) and its streams, and compares them with the file's. */
export async function diffStreams(client: ApiClient, entries: unknown[], prune: boolean): Promise<DiffResult> {
  const [planned, listed] = await Promise.all([
    client.call<ApplyResult>('POST', '/v1/apply', { streams: entries, prune, dryRun: true }),
    client.call<{ streams: StreamView[] }>('GET', '/v1/streams'),
  ]);
  const now = new Date();
  const wanted = new Map<number, StreamSpec>();
  // The daemon has validated every entry (else the dry run was refused): parsed here only to
  // compare. An entry this CLI cannot read (a field of a newer daemon) is shown without its fields.
  for (const entry of entries) {
    try {
      const spec = parseStreamInput(entry, { now });
      wanted.set(spec.port, spec);
    } catch {
      // planned by the daemon all the same; no field-by-field lines for it
    }
  }
  const current = new Map(listed.streams.map((stream) => [stream.port, stream]));
  const line = (stream: StreamSpec): string =>
    `${stream.protocol === 'tcp' ? '' : `${stream.protocol} `}-> ${describeStreamBackends(stream)}`;
  const diffs: StreamDiff[] = [];
  for (const port of planned.plan.create) {
    const spec = wanted.get(port);
    diffs.push({ port, action: 'create', changes: [], ...(spec ? { summary: line(spec) } : {}) });
  }
  for (const port of planned.plan.update) {
    const before = current.get(port);
    const after = wanted.get(port);
    diffs.push({ port, action: 'update', changes: before && after ? fieldChanges(before, after) : [] });
  }
  for (const port of planned.plan.delete) {
    const before = current.get(port);
    diffs.push({ port, action: 'delete', changes: [], ...(before ? { summary: line(before) } : {}) });
  }
  diffs.sort((a, b) => a.port - b.port);
  return { plan: planned.plan, diffs };
}

/** Prints the plan: `+` create, `~` update (a line per field), `-` delete; a count on stderr. */
export function printDiff(result: DiffResult, output: Output): void {
  if (printData(output, result)) return;
  const { color } = output;
  const lines: string[] = [];
  for (const diff of result.diffs) {
    if (diff.action === 'create') lines.push(color.green(`+ ${diff.port} ${printable(diff.summary ?? '')}`));
    else if (diff.action === 'delete') lines.push(color.red(`- ${diff.port} ${printable(diff.summary ?? '')}`));
    else {
      lines.push(color.yellow(`~ ${diff.port}`));
      for (const change of diff.changes) lines.push(`    ${printable(change)}`);
    }
  }
  if (lines.length > 0) output.out(lines.join('\n'));
  const { create, update, delete: remove } = result.plan;
  const total = create.length + update.length + remove.length;
  output.err(
    total === 0
      ? 'no changes'
      : `${total} change(s): ${create.length} to create, ${update.length} to update, ${remove.length} to delete`,
  );
}
