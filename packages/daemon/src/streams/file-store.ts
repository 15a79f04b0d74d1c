/**
 * The embedded store: one JSON file, replaced atomically and flushed to disk on every commit, so
 * a change the daemon acknowledged survives a crash or a power cut, and a change it refused never
 * reaches the file.
 */
import { mkdir, readdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ErrorCode, StartupError, type StreamRecord } from '@stream-conductor/shared';
import { readIfExists, removeIfExists, TEMP_PREFIX, writeFileAtomic } from '../sys/files.js';
import { recordFromJson } from './record.js';
import type { StoreChange, StoreLoad, StreamStore } from './store.js';

const FORMAT = 1;
const SEPARATOR = Buffer.from(',\n');

/** The store file is not a store this daemon can read: it does not start, and the file is left as it is. */
export class StoreCorruptError extends StartupError {
  override readonly name = 'StoreCorruptError';

  constructor(message: string, hint?: string) {
    super(message, { code: ErrorCode.StoreCorrupt, hint });
  }
}

interface PendingCommit {
  change: StoreChange;
  resolve(): void;
  reject(error: unknown): void;
}

export class FileStore implements StreamStore {
  private records = new Map<number, StreamRecord>();
  /** The text of each record in the file as last written (see serialize). */
  private texts = new Map<StreamRecord, Buffer>();
  private readonly pending: PendingCommit[] = [];
  private writing = false;

  constructor(readonly path: string) {}

  async load(): Promise<StoreLoad> {
    await this.removeTemporaries();
    const text = await readIfExists(this.path);
    const problems: string[] = [];
    this.records = new Map();
    if (text === undefined) return { records: [], problems };
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (error) {
      throw new StoreCorruptError(
        `${this.path} is not valid JSON (${(error as Error).message})`,
        'move it aside to start empty',
      );
    }
    const streams = typeof data === 'object' && data !== null ? (data as { streams?: unknown }).streams : undefined;
    if ((data as { format?: unknown } | null)?.format !== FORMAT || !Array.isArray(streams)) {
      throw new StoreCorruptError(`${this.path} is not a stream-conductor store of format ${FORMAT}`);
    }
    for (const entry of streams as unknown[]) {
      try {
        const record = recordFromJson(entry);
        if (this.records.has(record.port)) throw new Error(`port ${record.port} appears twice`);
        this.records.set(record.port, record);
      } catch (error) {
        problems.push(`store entry ${JSON.stringify(entry)} was skipped: ${(error as Error).message}`);
      }
    }
    return { records: [...this.records.values()], problems };
  }

  /** Removes what a commit interrupted by a crash left beside the store file. */
  private async removeTemporaries(): Promise<void> {
    let names: string[];
    try {
      names = await readdir(dirname(this.path));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    const prefix = `${TEMP_PREFIX}${basename(this.path)}.`;
    for (const name of names) if (name.startsWith(prefix)) await removeIfExists(join(dirname(this.path), name));
  }

  /**
   * Commits are grouped: the changes that arrive while the file is being written go into the next
   * write together (the nginx instances apply their batches side by side), and each resolves once
   * the write holding it is on disk. A failed write fails every change in it, and none of them is
   * kept.
   */
  commit(change: StoreChange): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending.push({ change, resolve, reject });
      if (!this.writing) void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.writing = true;
    try {
      while (this.pending.length > 0) {
        const group = this.pending.splice(0);
        try {
          await this.write(group.map((one) => one.change));
          for (const one of group) one.resolve();
        } catch (error) {
          for (const one of group) one.reject(error);
        }
      }
    } finally {
      this.writing = false;
    }
  }

  private async write(changes: StoreChange[]): Promise<void> {
    const next = new Map(this.records);
    for (const change of changes) {
      for (const port of change.remove) next.delete(port);
      for (const record of change.put) next.set(record.port, record);
    }
    const streams = [...next.values()].sort((a, b) => a.port - b.port);
    await mkdir(dirname(this.path), { recursive: true });
    await writeFileAtomic(this.path, this.serialize(streams), { durable: true, mode: 0o600 });
    this.records = next;
  }

  /**
   * `JSON.stringify({ format, streams }, null, 1)` and a newline, byte for byte, in pieces: the
   * bytes of each record are kept between writes (a burst writes the whole file once per group,
   * and most of its records did not change), and no copy of the whole file is made.
   */
  private serialize(streams: StreamRecord[]): Buffer[] {
    if (streams.length === 0) return [Buffer.from(`{\n "format": ${FORMAT},\n "streams": []\n}\n`)];
    const texts = new Map<StreamRecord, Buffer>();
    const parts: Buffer[] = [Buffer.from(`{\n "format": ${FORMAT},\n "streams": [\n`)];
    streams.forEach((record, index) => {
      // A JSON text holds no raw newline: each of its line breaks is the layout's.
      const text =
        this.texts.get(record) ?? Buffer.from(`  ${JSON.stringify(record, null, 1).replaceAll('\n', '\n  ')}`);
      texts.set(record, text);
      if (index > 0) parts.push(SEPARATOR);
      parts.push(text);
    });
    this.texts = texts;
    parts.push(Buffer.from('\n ]\n}\n'));
    return parts;
  }
}
