/** The daemon's two log forms: JSON lines for machines, readable lines for people. */
import { describe, expect, it } from '@jest/globals';
import { createLogger, type LogFormat } from '../src/log.js';

function capture(format: LogFormat): { lines: string[]; log: ReturnType<typeof createLogger> } {
  const lines: string[] = [];
  const log = createLogger({ format, sink: { write: (line: string) => lines.push(line) } });
  return { lines, log };
}

describe('the readable form', () => {
  it('writes time, level, message and the fields as key=value, bare words as they are', () => {
    const { lines, log } = capture('text');
    log.child({ instance: 0 }).warn('stream set aside', { port: 9000, backend: 'db.internal:5432', ok: false });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z WARN {2}stream set aside instance=0 port=9000 backend=db\.internal:5432 ok=false\n$/,
    );
  });

  it('quotes a value that is not a bare word, so no value can start a line or fake a field', () => {
    const { lines, log } = capture('text');
    log.error('refused', {
      reason: 'host not found\n2026-12-05T00:00:00.000Z INFO  forged port=1',
      path: '/v1/streams 9000',
      'key with space': 'x',
      error: Object.assign(new Error('boom'), { code: 'EMFILE' }),
      list: [1, 2],
    });
    const [line] = lines;
    expect(line?.split('\n')).toEqual([expect.any(String), '']);
    expect(line).toContain(' reason="host not found\\n2026-12-05T00:00:00.000Z INFO  forged port=1"');
    expect(line).toContain(' path="/v1/streams 9000"');
    expect(line).toContain(' "key with space"=x');
    expect(line).toContain(' error={"message":"boom","code":"EMFILE"}');
    expect(line).toContain(' list=[1,2]');
  });

  it('escapes control characters in the message too', () => {
    const { lines, log } = capture('text');
    log.info('a\u001b[31mred\nline');
    expect(lines[0]).toMatch(/ INFO {2}a\\u001b\[31mred\\nline\n$/);
  });
});

describe('the JSON form', () => {
  it('writes one JSON object per line with the same fields, and honours the level', () => {
    const lines: string[] = [];
    const log = createLogger({ format: 'json', level: 'warn', sink: { write: (line: string) => lines.push(line) } });
    log.info('not written');
    log.warn('written', { port: 9000 });
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0] ?? '')).toMatchObject({ level: 'warn', msg: 'written', port: 9000 });
  });
});
