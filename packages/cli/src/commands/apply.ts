/** `conductor apply -f streams.yaml`: a declarative file, kept in git, made true on the daemon. */
import { readFile } from 'node:fs/promises';
import { type ApplyResult, ConductorError, ErrorCode, printable } from '@stream-conductor/shared';
import type { ApiClient } from '../client.js';
import type { Output } from '../output.js';

/** Reads the file (`-` is standard input): YAML or JSON, either `streams: [...]` or a bare list. */
export async function readStreamsFile(path: string): Promise<unknown[]> {
  let text: string;
  try {
    text = path === '-' ? await readStdin() : await readFile(path, 'utf8');
  } catch (error) {
    throw new ConductorError(ErrorCode.Usage, `cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  const yaml = await import('yaml');
  // Bundled, the CommonJS package may arrive as the default export of its namespace.
  const { parse, YAMLError } = typeof yaml.parse === 'function' ? yaml : (yaml as unknown as { default: typeof yaml }).default;
  let data: unknown;
  try {
    data = parse(text, { maxAliasCount: 100 });
  } catch (error) {
    if (!(error instanceof YAMLError)) throw error;
    throw new ConductorError(ErrorCode.Usage, `${path} is not valid YAML: ${error.message.split('\n')[0] ?? ''}`);
  }
  if (Array.isArray(data)) return data;
  if (typeof data === 'object' && data !== null && Array.isArray((data as { streams?: unknown }).streams)) {
    const extra = Object.keys(data).filter((key) => key !== 'streams');
    if (extra.length > 0) throw new ConductorError(ErrorCode.Usage, `${path}: unknown top-level key ${JSON.stringify(extra[0])} (only streams)`);
    return (data as { streams: unknown[] }).streams;
  }
  if (data === null || data === undefined) return [];
  throw new ConductorError(ErrorCode.Usage, `${path} must hold a list of streams, or streams: followed by one`);
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export function applyStreams(client: ApiClient, streams: unknown[], options: { prune: boolean; dryRun: boolean }): Promise<ApplyResult> {
  return client.call<ApplyResult>('POST', '/v1/apply', { streams, prune: options.prune, dryRun: options.dryRun });
}

export function printApplied(result: ApplyResult, output: Output): void {
  if (output.json) {
    output.out(JSON.stringify(result, null, 2));
    return;
  }
  const { color } = output;
  const lines: string[] = [];
  for (const port of result.plan.create) lines.push(`${color.green('create')}    ${port}`);
  for (const port of result.plan.update) lines.push(`${color.yellow('update')}    ${port}`);
  for (const port of result.plan.delete) lines.push(`${color.red('delete')}    ${port}`);
  for (const port of result.plan.unchanged) lines.push(`unchanged ${port}`);
  if (lines.length > 0) output.out(lines.join('\n'));
  const changes = result.plan.create.length + result.plan.update.length + result.plan.delete.length;
  output.err(result.dryRun ? `dry run: ${changes} change(s) planned, nothing applied` : `applied ${changes} change(s)`);
  for (const warning of result.warnings) output.err(`${output.errColor.yellow('warning:')} ${printable(warning)}`);
}
