/**
 * A port in a JSON body is taken only as written in decimal digits, as the CLI takes it:
 * JSON.parse reads 1.8151e4 and 18151.0 as 18151, and the text is gone once parsed, so the body's
 * text is read here first (body-parser's verify hook). Only the ports of streams are checked: a
 * body's own `port` (POST and PUT /v1/streams) and `streams[i].port` (POST /v1/apply).
 */
import { ConductorError, isDecimalText, parsePort } from '@stream-conductor/shared';

export interface WrittenNumber {
  /** Keys and list indexes from the top of the body down to the number. */
  path: Array<string | number>;
  /** The number as written. */
  text: string;
}

type Level = { kind: 'object'; key: string | undefined; keyNext: boolean } | { kind: 'array'; index: number };

const NUMBER = /-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

/**
 * The numbers of `text` written under a key `port` in any other way than decimal digits. One pass
 * without recursion (a body may nest deeply); text that is not JSON gives no meaningful answer but
 * never throws: JSON.parse refuses it afterwards.
 */
export function nonDecimalPortNumbers(text: string): WrittenNumber[] {
  const found: WrittenNumber[] = [];
  const levels: Level[] = [];
  let i = 0;
  while (i < text.length) {
    const char = text[i];
    const top = levels[levels.length - 1];
    if (char === '"') {
      let end = i + 1;
      while (end < text.length && text[end] !== '"') end += text[end] === '\\' ? 2 : 1;
      if (top?.kind === 'object' && top.keyNext) {
        top.keyNext = false;
        try {
          top.key = JSON.parse(text.slice(i, end + 1)) as string;
        } catch {
          top.key = undefined;
        }
      }
      i = end + 1;
    } else if (char === '{') {
      levels.push({ kind: 'object', key: undefined, keyNext: true });
      i += 1;
    } else if (char === '[') {
      levels.push({ kind: 'array', index: 0 });
      i += 1;
    } else if (char === '}' || char === ']') {
      levels.pop();
      i += 1;
    } else if (char === ',') {
      if (top?.kind === 'array') top.index += 1;
      else if (top?.kind === 'object') {
        top.key = undefined;
        top.keyNext = true;
      }
      i += 1;
    } else if (char === '-' || (char !== undefined && char >= '0' && char <= '9')) {
      NUMBER.lastIndex = i;
      const written = NUMBER.exec(text)?.[0] ?? char;
      if (top?.kind === 'object' && top.key === 'port' && !isDecimalText(written)) {
        found.push({
          path: levels.map((level) => (level.kind === 'object' ? (level.key ?? '') : level.index)),
          text: written,
        });
      }
      i += written.length;
    } else {
      i += 1;
    }
  }
  return found;
}

/** Throws the refusal parseStreamInput would give had the port been sent as that text. */
export function refuseNonDecimalPorts(text: string): void {
  for (const { path, text: written } of nonDecimalPortNumbers(text)) {
    const [first, index, last] = path;
    const own = path.length === 1 && first === 'port';
    const inApply = path.length === 3 && first === 'streams' && typeof index === 'number' && last === 'port';
    if (!own && !inApply) continue;
    try {
      parsePort(written);
    } catch (error) {
      if (!(error instanceof ConductorError) || own) throw error;
      throw new ConductorError(error.code, `streams[${index}]: ${error.message}`, { hint: error.hint });
    }
  }
}
