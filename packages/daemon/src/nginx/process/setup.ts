/** The one-time set-up of a managed nginx: learn its build and write the main configuration. */
import { mkdir } from 'node:fs/promises';
import { StartupError } from '@stream-conductor/shared';
import type { Logger } from '../../log.js';
import { removeTemporaries, writeFileAtomic } from '../../sys/files.js';
import { NginxBinaryError, type NginxBuild, probeNginx } from '../binary.js';

/** nginx cannot be set up at all: the binary cannot run, or it has no stream module. */
export class SetupError extends StartupError {}

export interface SetupOptions {
  nginxBin: string;
  /** Folder of this master's own files. */
  dir: string;
  confPath: string;
  /** The main configuration for this nginx build (see renderMainConf). Throws when it cannot be made. */
  mainConf(build: NginxBuild): string;
  /** Reads the nginx build; probeNginx by default. */
  probe?: ((bin: string) => Promise<NginxBuild>) | undefined;
  log: Logger;
}

/** Learns the nginx build and writes the main configuration; throws SetupError when nginx cannot serve streams. */
export async function setUpNginx(options: SetupOptions): Promise<void> {
  let build: NginxBuild;
  try {
    build = await (options.probe ?? probeNginx)(options.nginxBin);
  } catch (error) {
    if (error instanceof NginxBinaryError) throw new SetupError(error.message);
    throw error;
  }
  if (build.stream === 'missing' || (build.stream === 'dynamic' && build.streamModule === undefined)) {
    throw new SetupError(
      `${options.nginxBin} has no stream module${build.stream === 'dynamic' ? ' file (built as a dynamic module)' : ''}; ` +
        'on Debian/Ubuntu: apt-get install nginx-light libnginx-mod-stream',
    );
  }
  let text: string;
  try {
    text = options.mainConf(build);
  } catch (error) {
    throw new SetupError((error as Error).message);
  }
  await mkdir(options.dir, { recursive: true });
  await removeTemporaries(options.dir);
  await writeFileAtomic(options.confPath, text);
  options.log.info('nginx found', { bin: options.nginxBin, version: build.version, stream: build.stream });
}
