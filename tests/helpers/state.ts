/** Snapshots of everything a refused change must leave as it was. */
import { readdir, readFile } from 'node:fs/promises';
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

/**
 * The text of each stream rendered under `folder` (any sub-folder), by port: a per-stream file
 * (`_conductor_<port>.conf`, an external nginx) or a stream's part of a master's bundle
 * (`_conductor_streams.conf`, a managed nginx; each part starts with `# stream-conductor: port N`).
 */
export function renderedStreams(files: Record<string, string>): Map<number, { file: string; text: string }> {
  const streams = new Map<number, { file: string; text: string }>();
  const add = (port: number, file: string, text: string): void => {
    if (streams.has(port))
      throw new Error(`port ${port} is rendered twice: in ${streams.get(port)?.file} and in ${file}`);
    streams.set(port, { file, text });
  };
  for (const [path, content] of Object.entries(files)) {
    const own = /(?:^|\/)_conductor_([0-9]+)\.conf$/.exec(path);
    if (own) add(Number(own[1]), path, content);
    if (!/(?:^|\/)_conductor_streams\.conf$/.test(path)) continue;
    const parts = content.split(/^(?=# stream-conductor: port )/m).slice(1);
    for (const part of parts) add(Number(/^# stream-conductor: port ([0-9]+) /.exec(part)?.[1]), path, part);
  }
  return streams;
}

/** The ports rendered under `folder`, in order. */
export async function renderedPorts(folder: string): Promise<number[]> {
  return [...renderedStreams(await folderContents(folder)).keys()].sort((a, b) => a - b);
}

/** The per-stream files, the store, the legacy listing and the range's listening ports. */
export async function snapshot(daemon: Daemon, streamFolder = join(daemon.home, 'stream.d')): Promise<Snapshot> {
  const listening = [...(await listeningPorts())]
    .filter((port) => port >= daemon.rangeStart && port <= daemon.rangeEnd)
    .sort((a, b) => a - b);
  return {
    files: await folderContents(streamFolder),
    store: await readFile(join(daemon.home, 'streams.json'), 'utf8').catch(() => ''),
    streams: (await daemon.get('/getstreams')).text,
    listening,
  };
}
