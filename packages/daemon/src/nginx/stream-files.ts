/**
 * The include files of one nginx instance's streams, in one of two layouts: a file per stream
 * (StreamFiles: an external nginx, whose folder operators and their scripts know), or one file
 * for all the streams of a master (BundleFiles: a managed nginx). Every write is atomic (temporary
 * file, then rename), so nginx never reads half a file; a snapshot taken before a change restores
 * the exact previous bytes when the change is refused.
 */
import { readdir, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { StreamRecord } from '@stream-conductor/shared';
import { readIfExists, removeIfExists, TEMP_PREFIX, writeFileAtomic } from '../sys/files.js';
import {
  type LegacyParse,
  parseLegacyFile,
  portOfStreamFileName,
  renderStreamFile,
  type StreamRenderOptions,
  streamFileName,
} from './render.js';

/** The previous text of each stream a change touches; undefined means it had none. */
export type FileSnapshot = Map<number, string | undefined>;

export interface FolderScan {
  /** Ports of the files in our naming scheme. */
  ours: number[];
  /** Old-format files, parsed. */
  legacy: Array<{ name: string; parsed: LegacyParse }>;
  /** Leftover temporary files of an interrupted write. */
  temporary: string[];
}

/** What the apply pipeline needs of a layout. */
export interface StreamFileSet {
  readonly folder: string;
  /** The port whose text nginx named in a message (file and line), if the file is one of ours. */
  portAt(path: string, line: number): number | undefined;
  snapshot(ports: Iterable<number>): Promise<FileSnapshot>;
  /** Writes the streams of `write` and removes those of `remove`. */
  apply(write: StreamRecord[], remove: number[]): Promise<void>;
  /** Puts back exactly what `snapshot` saw. */
  restore(snapshot: FileSnapshot): Promise<void>;
  scan(): Promise<FolderScan>;
  removeTemporary(name: string): Promise<void>;
}

/** A file per stream, named after its port. */
export class StreamFiles implements StreamFileSet {
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

  portAt(path: string): number | undefined {
    const slash = path.lastIndexOf('/');
    if (path.slice(0, slash) !== this.folder.replace(/\/+$/, '')) return undefined;
    return portOfStreamFileName(this.prefix, path.slice(slash + 1));
  }

  async snapshot(ports: Iterable<number>): Promise<FileSnapshot> {
    const snapshot: FileSnapshot = new Map();
    for (const port of ports) snapshot.set(port, await readIfExists(this.pathOf(port)));
    return snapshot;
  }

  async apply(write: StreamRecord[], remove: number[]): Promise<void> {
    for (const record of write) await writeFileAtomic(this.pathOf(record.port), this.render(record));
    for (const port of remove) await removeIfExists(this.pathOf(port));
  }

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

/** The marker each stream's text starts with (renderStreamFile's first line). */
const BLOCK_START = /^# stream-conductor: port ([1-9][0-9]{0,4}) /;

/** One stream's text, kept as the bytes the file is written from. */
interface Block {
  bytes: Buffer;
  lines: number;
}

function block(text: string): Block {
  let lines = 0;
  for (let at = text.indexOf('\n'); at >= 0; at = text.indexOf('\n', at + 1)) lines += 1;
  return { bytes: Buffer.from(text, 'utf8'), lines };
}

const BUNDLE_HEADER = Buffer.from(
  '# Generated by stream-conductor: every stream of this nginx. Change streams through its API, not here.\n',
);

/**
 * Every stream of one managed nginx in one file, `<prefix>streams.conf`, in port order. A change
 * writes one file whatever its size, where a file per stream costs a new file (an inode) per
 * created stream and nginx an open, a read and a close per stream at every reload or handoff.
 * nginx names the file and the line of what it refuses: the line is mapped back to its stream.
 *
 * Files of the per-stream layout found in the folder (a daemon of an earlier version wrote them)
 * are reported by scan and removed as soon as the bundle holds their streams.
 */
export class BundleFiles implements StreamFileSet {
  private blocks = new Map<number, Block>();
  private loaded = false;
  /** Where each stream starts in the file as the last apply wrote it: what nginx last read. */
  private starts: Array<{ line: number; port: number }> = [];
  private readonly perStream: StreamFiles;
  private readonly earlierLayout = new Set<number>();

  constructor(
    readonly folder: string,
    readonly prefix: string,
    private readonly renderOptions: StreamRenderOptions,
  ) {
    this.perStream = new StreamFiles(folder, prefix, renderOptions);
  }

  get path(): string {
    return join(this.folder, `${this.prefix}streams.conf`);
  }

  portAt(path: string, line: number): number | undefined {
    if (path !== this.path) return this.perStream.portAt(path);
    let port: number | undefined;
    for (const start of this.starts) {
      if (start.line > line) break;
      port = start.port;
    }
    return port;
  }

  async snapshot(ports: Iterable<number>): Promise<FileSnapshot> {
    await this.load();
    const snapshot: FileSnapshot = new Map();
    for (const port of ports) {
      // A stream still in its file of the earlier layout is put back into the bundle on restore.
      const earlier = this.earlierLayout.has(port) ? (await this.perStream.snapshot([port])).get(port) : undefined;
      snapshot.set(port, this.blocks.get(port)?.bytes.toString('utf8') ?? earlier);
    }
    return snapshot;
  }

  async apply(write: StreamRecord[], remove: number[]): Promise<void> {
    await this.load();
    const next = new Map(this.blocks);
    for (const record of write) next.set(record.port, block(renderStreamFile(record, this.renderOptions)));
    for (const port of remove) next.delete(port);
    this.starts = await this.write(next);
    const moved = [...write.map((record) => record.port), ...remove].filter((port) => this.earlierLayout.delete(port));
    if (moved.length > 0) await this.perStream.apply([], moved);
  }

  async restore(snapshot: FileSnapshot): Promise<void> {
    await this.load();
    const next = new Map(this.blocks);
    for (const [port, text] of snapshot) {
      if (text === undefined) next.delete(port);
      else next.set(port, block(text));
    }
    await this.write(next);
  }

  async scan(): Promise<FolderScan> {
    const scan = await this.perStream.scan();
    for (const port of scan.ours) this.earlierLayout.add(port);
    this.loaded = false; // read the bundle as it is on disk now
    await this.load();
    return { ours: [...new Set([...this.blocks.keys(), ...scan.ours])], legacy: [], temporary: scan.temporary };
  }

  removeTemporary(name: string): Promise<void> {
    return this.perStream.removeTemporary(name);
  }

  /**
   * Replaces the file with `next`; returns the line each stream starts on. The file is written
   * from the streams' bytes as they are kept: a change to one of thousands of streams allocates
   * no copy of the whole.
   */
  private async write(next: Map<number, Block>): Promise<Array<{ line: number; port: number }>> {
    const parts: Buffer[] = [BUNDLE_HEADER];
    const starts: Array<{ line: number; port: number }> = [];
    let line = 2;
    for (const port of [...next.keys()].sort((a, b) => a - b)) {
      const one = next.get(port) as Block;
      starts.push({ line, port });
      parts.push(one.bytes);
      line += one.lines;
    }
    await writeFileAtomic(this.path, parts);
    this.blocks = next;
    return starts;
  }

  /** Reads the streams the file on disk holds, once. */
  private async load(): Promise<void> {
    if (this.loaded) return;
    const text = await readIfExists(this.path);
    this.blocks = new Map();
    let port: number | undefined;
    let lines: string[] = [];
    const close = (): void => {
      if (port !== undefined) this.blocks.set(port, block(lines.join('')));
    };
    for (const line of (text ?? '').split(/(?<=\n)/)) {
      const start = BLOCK_START.exec(line);
      if (start) {
        close();
        port = Number(start[1]);
        lines = [];
      }
      if (port !== undefined) lines.push(line);
    }
    close();
    this.loaded = true;
  }
}
