/** Facts about the nginx binary, and the two commands the daemon runs: `nginx -V` and `nginx -t`. */
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { StartupError } from '@stream-conductor/shared';
import { execa } from 'execa';

export interface NginxBuild {
  version: string;
  /** builtin: compiled in; dynamic: a module file to load; missing: no stream support at all. */
  stream: 'builtin' | 'dynamic' | 'missing';
  /** Path of the dynamic stream module when `stream` is dynamic and the file exists. */
  streamModule: string | undefined;
  /** The pid file nginx was built with (`--pid-path`). */
  pidPath: string | undefined;
  prefix: string | undefined;
}

export class NginxBinaryError extends StartupError {
  override readonly name = 'NginxBinaryError';
}

/** Parses the text of `nginx -V`. `moduleExists` tells whether a module file is present. */
export function parseNginxBuild(text: string): Omit<NginxBuild, 'streamModule'> & { modulesPath: string } {
  const version = /nginx version: nginx\/(\S+)/.exec(text)?.[1] ?? 'unknown';
  const option = (name: string): string | undefined => new RegExp(`--${name}=(\\S+)`).exec(text)?.[1];
  let stream: NginxBuild['stream'] = 'missing';
  if (/--with-stream=dynamic(\s|$)/.test(text)) stream = 'dynamic';
  else if (/--with-stream(\s|$)/.test(text)) stream = 'builtin';
  const prefix = option('prefix');
  return {
    version,
    stream,
    pidPath: option('pid-path'),
    prefix,
    modulesPath: option('modules-path') ?? join(prefix ?? '/usr/share/nginx', 'modules'),
  };
}

export async function probeNginx(bin: string): Promise<NginxBuild> {
  const result = await execa(bin, ['-V'], { reject: false, all: true });
  if (result.failed && result.exitCode === undefined) {
    throw new NginxBinaryError(`cannot run ${bin}: ${result.code ?? result.shortMessage}`);
  }
  const parsed = parseNginxBuild(result.all ?? '');
  if (!/nginx version:/.test(result.all ?? '')) throw new NginxBinaryError(`${bin} -V did not print an nginx version`);
  let streamModule: string | undefined;
  if (parsed.stream === 'dynamic') {
    // Debian packs it as libnginx-mod-stream; other builds keep it in --modules-path.
    for (const candidate of [
      join(parsed.modulesPath, 'ngx_stream_module.so'),
      '/usr/lib/nginx/modules/ngx_stream_module.so',
    ]) {
      try {
        await access(candidate);
        streamModule = candidate;
        break;
      } catch {
        // try the next place
      }
    }
  }
  return {
    version: parsed.version,
    stream: parsed.stream,
    streamModule,
    pidPath: parsed.pidPath,
    prefix: parsed.prefix,
  };
}

/** One `[level]` line of nginx's output or error log, stripped of time and pid. */
export interface NginxLogLine {
  level: string;
  text: string;
}

/** Reads nginx's message lines ("nginx: [emerg] ..." or "2024/.. [emerg] 12#12: ..."). */
export function parseNginxLines(output: string): NginxLogLine[] {
  const lines: NginxLogLine[] = [];
  for (const raw of output.split('\n')) {
    const match =
      /\[(emerg|alert|crit|error|warn|notice|info|debug)\]\s+(?:[0-9]+#[0-9]+:\s+(?:\*[0-9]+\s+)?)?(.*)$/.exec(raw);
    if (match) lines.push({ level: match[1] ?? 'error', text: (match[2] ?? '').trim() });
  }
  return lines;
}

/** Removes file paths from an nginx message before it is shown to an API client. */
export function withoutPaths(text: string): string {
  return text.replace(/ in \/\S+:[0-9]+$/, '').replace(/\/[^\s"]+\//g, '');
}

export interface TestResult {
  ok: boolean;
  /** nginx's error lines when the test failed. */
  lines: NginxLogLine[];
  /** The first error line, for people. */
  message: string;
}

/** Runs `nginx -t` with the given arguments (which select the configuration). */
export async function testConfiguration(bin: string, args: string[]): Promise<TestResult> {
  const result = await execa(bin, ['-t', '-q', ...args], { reject: false, all: true, timeout: 60_000 });
  if (result.exitCode === 0) return { ok: true, lines: [], message: '' };
  if (result.exitCode === undefined && result.code !== undefined) {
    return { ok: false, lines: [], message: `cannot run ${bin}: ${result.code}` };
  }
  const lines = parseNginxLines(result.all ?? '').filter(
    (line) => line.level === 'emerg' || line.level === 'alert' || line.level === 'crit',
  );
  const message =
    lines[0]?.text ??
    (result.all || result.shortMessage || 'nginx -t failed').trim().split('\n')[0] ??
    'nginx -t failed';
  return { ok: false, lines, message };
}
