/** Snapshots of everything a refused change must leave as it was. */
import { readFile, readdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import type { Daemon } from './daemon.js';
import { listeningPorts } from './net.js';

export interface Snapshot {
  files: Record<string, string>;
  store: string;
  streams: string;
  listening: number[];
}

/** Every file under `folder` (its sub-folders too), by relative path. */
export async function folderContents(folder: string): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  const walk = async (dir: string): Promise<void> => {
    for (const entry of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) await walk(path);
      else files[relative(folder, path)] = await readFile(path, 'utf8');
    }
  };
  await walk(folder);
  return files;
}

/** The ports of the per-stream files under `folder` (`_conductor_<port>.conf`, any sub-folder). */
export async function renderedPorts(folder: string): Promise<number[]> {
  return Object.keys(await folderContents(folder))
    .flatMap((path) => {
      const match = /(?:^|\/)_conductor_([0-9]+)\.conf$/.exec(path);
      return match ? [Number(match[1])] : [];
    })
    .sort((a, b) => a - b);
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
