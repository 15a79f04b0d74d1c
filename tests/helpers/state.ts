/** Snapshots of everything a refused change must leave as it was. */
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Daemon } from './daemon.js';
import { listeningPorts } from './net.js';

export interface Snapshot {
  files: Record<string, string>;
  store: string;
  streams: string;
  listening: number[];
}

async function folderContents(folder: string): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  for (const name of (await readdir(folder)).sort()) files[name] = await readFile(join(folder, name), 'utf8');
  return files;
}

/** The per-stream files, the store, the legacy listing and the range's listening ports. */
export async function snapshot(daemon: Daemon, streamFolder = join(daemon.home, 'stream.d')): Promise<Snapshot> {
  const listening = [...(await listeningPorts())].filter((port) => port >= daemon.rangeStart && port <= daemon.rangeEnd).sort((a, b) => a - b);
  return {
    files: await folderContents(streamFolder),
    store: await readFile(join(daemon.home, 'streams.json'), 'utf8').catch(() => ''),
    streams: (await daemon.get('/getstreams')).text,
    listening,
  };
}
