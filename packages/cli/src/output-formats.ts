/**
 * `-o json|yaml|wide|name`: which output formats each command takes, the choice of one before a
 * command runs (a format the command does not take is a usage error, nothing is sent), and the
 * printing of data in a chosen format. `--json` is `-o json`.
 *
 * - json: the daemon's answer as JSON (as `--json` always printed it);
 * - yaml: the same data as YAML (it reads back to exactly what json gives);
 * - name: one port per line, the identifier every command that takes a stream takes
 *   (`conductor ls -o name | xargs -n1 conductor rm`);
 * - wide: `ls` with more columns (listen address, balance, allow-list, limits, created).
 *
 * Without -o a command prints its own text for people ('text' here).
 */
import { ConductorError, ErrorCode } from '@stream-conductor/shared';

export type FormatName = 'text' | 'json' | 'yaml' | 'wide' | 'name';

/** What -o takes, in the order help and errors list them. */
export const OUTPUT_FORMATS = ['json', 'yaml', 'wide', 'name'] as const;
export type OutputFormatName = (typeof OUTPUT_FORMATS)[number];

/** The formats each command takes besides its text; a command not listed takes json only. */
export const COMMAND_FORMATS: Record<string, readonly OutputFormatName[]> = {
  ls: ['json', 'yaml', 'wide', 'name'],
  get: ['json', 'yaml', 'name'],
  create: ['json', 'yaml', 'name'],
  rm: ['json', 'yaml', 'name'],
  renew: ['json', 'yaml', 'name'],
  drain: ['json', 'yaml', 'name'],
  wait: ['json', 'yaml', 'name'],
  'free-port': ['json', 'yaml', 'name'],
  status: ['json', 'yaml'],
  events: ['json', 'yaml'],
  apply: ['json', 'yaml'],
  diff: ['json', 'yaml'],
  'context ls': ['json', 'yaml', 'name'],
  'context show': ['json', 'yaml'],
};

export function formatsOf(command: string): readonly OutputFormatName[] {
  return COMMAND_FORMATS[command] ?? ['json'];
}

/** The chosen format, with the serializer of json and yaml (loaded only when yaml is chosen). */
export interface OutputFormat {
  name: FormatName;
  /** The text of a value in this format, without a trailing newline (json and yaml). */
  serialize(value: unknown): string;
}

const json = (value: unknown): string => JSON.stringify(value, null, 2);

export const TEXT: OutputFormat = { name: 'text', serialize: json };

type Yaml = typeof import('yaml');

/** The yaml package, loaded when needed (`ls` in text pays nothing for it). */
export async function loadYaml(): Promise<Yaml> {
  const yaml = await import('yaml');
  // Bundled, the CommonJS package may arrive as the default export of its namespace.
  return typeof yaml.parseDocument === 'function' ? yaml : (yaml as unknown as { default: Yaml }).default;
}

/** Strings that YAML 1.1 readers take for something else although YAML 1.2 does not (merge key, value). */
const YAML_11_SPECIAL = new Set(['<<', '=']);

/**
 * YAML of JSON data that reads back to the same data in YAML 1.2 (the yaml package, yq) and in
 * YAML 1.1 readers (PyYAML): a string either reads as a string in both, or it is double-quoted
 * (`"yes"`, `"off"`, `"2026-12-05T07:35:13Z"`, `"0o10"`, `"9000"`). No anchors, no folded lines.
 */
export function yamlSerializer(yaml: Yaml): (value: unknown) => string {
  return (value) => {
    const plain = new Map<string, boolean>();
    const readsAsItself = (text: string): boolean => {
      let same = plain.get(text);
      if (same === undefined) {
        try {
          same = !YAML_11_SPECIAL.has(text) && yaml.parse(text, { version: '1.1', logLevel: 'silent' }) === text;
        } catch {
          same = false;
        }
        plain.set(text, same);
      }
      return same;
    };
    const doc = new yaml.Document(value, { aliasDuplicateObjects: false });
    yaml.visit(doc, {
      Scalar: (_key, node) => {
        // Longer or multi-line strings are never plain scalars that mean something else.
        if (typeof node.value === 'string' && node.value.length <= 64 && !node.value.includes('\n'))
          if (!readsAsItself(node.value)) node.type = 'QUOTE_DOUBLE';
      },
    });
    return doc.toString({ lineWidth: 0 }).replace(/\n$/, '');
  };
}

const list = (names: readonly string[]): string =>
  names.length <= 1 ? (names[0] ?? '') : `${names.slice(0, -1).join(', ')} or ${names[names.length - 1]}`;

/**
 * The format for `command` from `-o` and `--json`. Throws a usage error for a format that does
 * not exist or that the command does not take, naming the ones it takes.
 */
export async function chooseFormat(
  command: string,
  given: string | undefined,
  jsonFlag: boolean,
): Promise<OutputFormat> {
  if (given !== undefined && jsonFlag && given !== 'json')
    throw new ConductorError(ErrorCode.Usage, `--json is -o json: give one of --json and -o ${given}`);
  const wanted = given ?? (jsonFlag ? 'json' : undefined);
  if (wanted === undefined) return TEXT;
  const name = OUTPUT_FORMATS.find((format) => format === wanted);
  if (name === undefined)
    throw new ConductorError(ErrorCode.Usage, `-o: one of ${list(OUTPUT_FORMATS)}, got ${JSON.stringify(wanted)}`);
  const takes = formatsOf(command);
  if (!takes.includes(name))
    throw new ConductorError(ErrorCode.Usage, `${command} does not print -o ${name}: it takes -o ${list(takes)}`);
  if (name === 'yaml') return { name, serialize: yamlSerializer(await loadYaml()) };
  return { name, serialize: json };
}

/** What print functions need of the output: where data goes and the chosen format. */
export interface DataOutput {
  format: OutputFormat;
  out(text: string): void;
}

/**
 * Prints `value` when the format is json or yaml, and the ports `names` gives when it is name;
 * answers whether it printed (false: the command prints its own text).
 */
export function printData(output: DataOutput, value: unknown, names?: () => number[]): boolean {
  const { format } = output;
  if (format.name === 'json' || format.name === 'yaml') {
    output.out(format.serialize(value));
    return true;
  }
  if (format.name === 'name' && names !== undefined) {
    const ports = names();
    if (ports.length > 0) output.out(ports.join('\n'));
    return true;
  }
  return false;
}
