/**
 * The per-stream include files of one nginx instance. Every write is atomic (temporary file,
 * then rename), so nginx never reads half a file; a snapshot taken before a change restores the
 * exact previous bytes when the change is refused.
 */
import { readdir, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { StreamRecord } from '@stream-conductor/shared';
import { TEMP_PREFIX, readIfExists, removeIfExists, writeFileAtomic } from '../sys/files.js';
import { type LegacyParse, type StreamRenderOptions, parseLegacyFile, portOfStreamFileName, renderStreamFile, streamFileName } from './render.js';

/** The previous content of each file a change touches; undefined means the file did not exist. */
export type FileSnapshot = Map<number, string | undefined>;

export interface FolderScan {
  /** Ports of the files in our naming scheme. */
  ours: number[];
  /** Old-format files, parsed. */
  legacy: Array<{ name: string; parsed: LegacyParse }>;
  /** Leftover temporary files of an interrupted write. */
  temporary: string[];
}

export class StreamFiles {
  constructor(
    readonly folder: string,
    readonly prefix: string,
    private readonly renderOptions: StreamRenderOptions,
  ) {}

  pathOf(port: number): string {
    return join(this.folder, streamFileName(this.prefix, port));
  }

  render(record: StreamRecord): string {
    return renderStreamFile(record, this.renderOptions);
  }

  /** The port whose file nginx named in a message, if the path is one of ours. */
  portOfPath(path: string): number | undefined {
    const slash = path.lastIndexOf('/');
    if (path.slice(0, slash) !== this.folder.replace(/\/+$/, '')) return undefined;
    return portOfStreamFileName(this.prefix, path.slice(slash + 1));
  }

  async snapshot(ports: Iterable<number>): Promise<FileSnapshot> {
    const snapshot: FileSnapshot = new Map();
    for (const port of ports) snapshot.set(port, await readIfExists(this.pathOf(port)));
    return snapshot;
  }

  /** Writes the files of `write` and removes those of `remove`. */
  async apply(write: StreamRecord[], remove: number[]): Promise<void> {
    for (const record of write) await writeFileAtomic(this.pathOf(record.port), this.render(record));
    for (const port of remove) await removeIfExists(this.pathOf(port));
  }

  /** Puts back exactly what `snapshot` saw. */
  async restore(snapshot: FileSnapshot): Promise<void> {
    for (const [port, content] of snapshot) {
      if (content === undefined) await removeIfExists(this.pathOf(port));
      else await writeFileAtomic(this.pathOf(port), content);
    }
  }

  async scan(): Promise<FolderScan> {
    const scan: FolderScan = { ours: [], legacy: [], temporary: [] };
    for (const name of await readdir(this.folder)) {
      if (name.startsWith(TEMP_PREFIX)) {
        scan.temporary.push(name);
        continue;
      }
      const port = portOfStreamFileName(this.prefix, name);
      if (port !== undefined) {
        scan.ours.push(port);
        continue;
      }
      if (!name.startsWith(this.prefix) || !name.endsWith('.conf')) continue;
      const content = await readFile(join(this.folder, name), 'utf8');
      const parsed = parseLegacyFile(this.prefix, name, content);
      if (parsed !== undefined) scan.legacy.push({ name, parsed });
    }
    return scan;
  }

  async removeTemporary(name: string): Promise<void> {
    await removeIfExists(join(this.folder, name));
  }

  /**
   * Moves an old-format file out of nginx's include glob, keeping it beside with a suffix:
   * `.adopted` once its stream is in the store, `.rejected` when it could not be taken over.
   */
  async retireLegacy(name: string, suffix: 'adopted' | 'rejected'): Promise<void> {
    await rename(join(this.folder, name), join(this.folder, `${name}.${suffix}`));
  }
}
