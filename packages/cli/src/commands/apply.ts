/** `conductor apply -f streams.yaml`: a declarative file, kept in git, made true on the daemon. */
import { readFile } from 'node:fs/promises';
import { type ApplyResult, ConductorError, ErrorCode, parsePort, printable } from '@stream-conductor/shared';
import type { ApiClient } from '../client.js';
import type { Output } from '../output.js';
import { loadYaml, printData } from '../output-formats.js';

/** Reads the file (`-` is standard input): YAML or JSON, either `streams: [...]` or a bare list. */
export async function readStreamsFile(path: string): Promise<unknown[]> {
  let text: string;
  try {
    text = path === '-' ? await readStdin() : await readFile(path, 'utf8');
  } catch (error) {
    throw new ConductorError(
      ErrorCode.Usage,
      `cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
    );
  }
  const data = parseStreamsText(text, path, await loadYaml());
  if (Array.isArray(data)) return data;
  if (typeof data === 'object' && data !== null && Array.isArray((data as { streams?: unknown }).streams)) {
    const extra = Object.keys(data).filter((key) => key !== 'streams');
    if (extra.length > 0)
      throw new ConductorError(
        ErrorCode.Usage,
        `${path}: unknown top-level key ${JSON.stringify(extra[0])} (only streams)`,
      );
    return (data as { streams: unknown[] }).streams;
  }
  if (data === null || data === undefined) return [];
  throw new ConductorError(ErrorCode.Usage, `${path} must hold a list of streams, or streams: followed by one`);
}

type Yaml = typeof import('yaml');

/** Fields besides the port that are whole numbers: the file must write them in decimal digits. */
const WHOLE_NUMBERS = ['maxConnections', 'maxConnectionsPerClient', 'uploadRate', 'downloadRate'];

/** Most alias expansions a file may make: far more than a hand-written file needs, and no bomb. */
const MAX_ALIAS_COUNT = 100;

const usage = (message: string): ConductorError => new ConductorError(ErrorCode.Usage, message);

/**
 * Parses the file's text as YAML (JSON is YAML too). Every problem is a one-line usage error:
 * syntax, an alias bomb ("billion laughs"), nesting too deep to build, and a stream port or limit
 * written any other way than in decimal digits (YAML reads 0o43330, 018150 and 1.8151e4 as
 * numbers; the CLI and the API take them only as plain decimal numbers).
 */
export function parseStreamsText(text: string, path: string, yaml: Yaml): unknown {
  const { parseDocument, isAlias, isMap, isScalar, isSeq } = yaml;
  try {
    const doc = parseDocument(text);
    const [problem] = doc.errors;
    if (problem !== undefined)
      throw usage(`${path} is not valid YAML: ${printable(problem.message.split('\n')[0] ?? '')}`);
    const resolve = (node: unknown): unknown => (isAlias(node) ? node.resolve(doc) : node);
    const root = resolve(doc.contents);
    const list = isSeq(root) ? root : isMap(root) ? resolve(root.get('streams', true)) : undefined;
    if (isSeq(list)) {
      list.items.forEach((item, index) => {
        const stream = resolve(item);
        const port = isMap(stream) ? resolve(stream.get('port', true)) : undefined;
        // A number as written in the file: its digits must be what the CLI takes for a port.
        if (isScalar(port) && typeof port.value === 'number') {
          try {
            parsePort(port.source ?? String(port.value));
          } catch (error) {
            throw usage(`${path}: streams[${index}].port: ${(error as Error).message}`);
          }
        }
        for (const field of WHOLE_NUMBERS) {
          const value = isMap(stream) ? resolve(stream.get(field, true)) : undefined;
          if (isScalar(value) && typeof value.value === 'number' && !/^[1-9][0-9]*$/.test(value.source ?? ''))
            throw usage(
              `${path}: streams[${index}].${field}: write it in decimal digits, got ${printable(value.source ?? String(value.value))}`,
            );
        }
      });
    }
    return doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT }) as unknown;
  } catch (error) {
    if (error instanceof ConductorError) throw error;
    // The yaml library throws a ReferenceError past maxAliasCount; a RangeError when the nesting
    // is deeper than the stack.
    if (error instanceof ReferenceError && /alias/i.test(error.message)) {
      throw usage(
        `${path} is not valid YAML: its aliases expand to too much (more than ${MAX_ALIAS_COUNT} expansions)`,
      );
    }
    if (error instanceof RangeError) throw usage(`${path} is not valid YAML: it is nested too deeply`);
    if (error instanceof yaml.YAMLError)
      throw usage(`${path} is not valid YAML: ${printable(error.message.split('\n')[0] ?? '')}`);
    throw error;
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export function applyStreams(
  client: ApiClient,
  streams: unknown[],
  options: { prune: boolean; dryRun: boolean },
): Promise<ApplyResult> {
  return client.call<ApplyResult>('POST', '/v1/apply', { streams, prune: options.prune, dryRun: options.dryRun });
}

export function printApplied(result: ApplyResult, output: Output): void {
  if (printData(output, result)) return;
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
