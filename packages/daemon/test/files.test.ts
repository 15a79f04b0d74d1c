/** Atomic file writes from a string or from pieces: every byte lands, in order, and nothing else. */

import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { writeFileAtomic } from '../src/sys/files.js';

let folder: string;

beforeEach(async () => {
  folder = await mkdtemp(join(tmpdir(), 'sc-files-'));
});

afterEach(async () => {
  await rm(folder, { recursive: true, force: true });
});

describe('writeFileAtomic', () => {
  for (const durable of [false, true]) {
    it(`writes more pieces than one writev takes, empty ones among them${durable ? ', flushed to disk' : ''}`, async () => {
      const path = join(folder, 'many.conf');
      await writeFile(path, 'the old content, longer than nothing\n');
      // 3,000 pieces of different sizes, some empty, one of them large: more than the kernel's
      // 1,024 pieces per writev.
      const pieces = Array.from({ length: 3000 }, (_, i) =>
        Buffer.from(i % 7 === 0 ? '' : i === 1500 ? 'x'.repeat(200_000) : `piece ${i};\n`),
      );
      await writeFileAtomic(path, pieces, { durable });
      expect(await readFile(path)).toEqual(Buffer.concat(pieces));
      expect(await readdir(folder)).toEqual(['many.conf']);
    });
  }

  it('writes a string as UTF-8, and an empty list of pieces as an empty file', async () => {
    const path = join(folder, 'one.conf');
    await writeFileAtomic(path, 'über\n');
    expect(await readFile(path, 'utf8')).toBe('über\n');
    await writeFileAtomic(path, []);
    expect(await readFile(path, 'utf8')).toBe('');
    expect(await readdir(folder)).toEqual(['one.conf']);
  });
});
