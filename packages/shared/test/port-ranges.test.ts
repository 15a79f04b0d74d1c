import { describe, expect, it } from '@jest/globals';
import {
  assertSpanInRange,
  backendForPort,
  ConductorError,
  describeStreamBackends,
  ErrorCode,
  formatPorts,
  parsePortSpan,
  parseStreamInput,
  portsOf,
  sameSpec,
  spansOverlap,
} from '../src/index.js';

const now = new Date('2026-01-01T00:00:00Z');
const parse = (input: Record<string, unknown>) => parseStreamInput(input, { now, portOptional: true });

function refusal(run: () => unknown): ConductorError {
  try {
    run();
  } catch (error) {
    if (error instanceof ConductorError) return error;
    throw error;
  }
  throw new Error('not refused');
}

describe('parsePortSpan', () => {
  it('reads FIRST-LAST, a range of one port as that port', () => {
    expect(parsePortSpan('30000-30100')).toEqual({ port: 30000, portEnd: 30100 });
    expect(parsePortSpan('9000-9000')).toEqual({ port: 9000 });
    expect(parsePortSpan('1-1000')).toEqual({ port: 1, portEnd: 1000 });
  });

  it.each([
    ['30100-30000', 'is reversed'],
    ['30000-', 'is not a port range'],
    ['-30000', 'is not a port range'],
    ['30000--30010', 'is not a port range'],
    ['030000-30010', 'is not a port range'],
    ['30000-30010-30020', 'is not a port range'],
    ['a-b', 'is not a port range'],
    ['0-10', 'is not a port range'],
    ['65530-65536', 'a port is at most 65535'],
    ['1-1001', 'spans 1001 ports, more than 1000'],
  ])('refuses %s naming it', (text, message) => {
    const error = refusal(() => parsePortSpan(text));
    expect(error.code).toBe(ErrorCode.InvalidInput);
    expect(error.message).toContain(JSON.stringify(text));
    expect(error.message).toContain(message);
  });
});

describe('a range in parseStreamInput', () => {
  it('takes port "FIRST-LAST" or port with portEnd, and a backend without its port as the same port', () => {
    const spec = parse({ port: '30000-30100', backend: 'ftp.internal' });
    expect(spec).toMatchObject({ port: 30000, portEnd: 30100, backends: [{ address: 'ftp.internal:30000' }] });
    expect(sameSpec(spec, parse({ port: 30000, portEnd: 30100, backend: 'ftp.internal:30000' }))).toBe(true);
    expect(parse({ port: '30000-30100', backend: '[::1]' }).backends[0]?.address).toBe('[::1]:30000');
    expect(parse({ port: '30000-30100', backends: [{ address: '10.0.0.1', weight: 2 }] }).backends).toEqual([
      { address: '10.0.0.1:30000', weight: 2 },
    ]);
  });

  it('keeps an offset backend as given, and refuses one whose last port would pass 65535', () => {
    expect(parse({ port: '30000-30100', backend: 'ftp.internal:40000' }).backends[0]?.address).toBe(
      'ftp.internal:40000',
    );
    expect(parse({ port: '30000-30100', backend: 'h:65435' }).backends[0]?.address).toBe('h:65435');
    const error = refusal(() => parse({ port: '30000-30100', backend: 'h:65436' }));
    expect(error.message).toBe('backend: "h:65436" for ports 30000-30100 would need backend port 65536, above 65535');
  });

  it('a single port still needs the backend port; a range and portEnd together are refused', () => {
    expect(refusal(() => parse({ port: 9000, backend: 'h' })).message).toContain('backend');
    expect(refusal(() => parse({ port: '9000-9010', portEnd: 9010, backend: 'h' })).message).toContain('not both');
    expect(refusal(() => parse({ portEnd: 9010, backend: 'h:1' })).message).toContain('needs its first port');
    expect(refusal(() => parse({ port: 9000, portEnd: 8000, backend: 'h:1' })).message).toContain('is reversed');
  });

  it('a path port must be the first port', () => {
    expect(refusal(() => parseStreamInput({ port: '9001-9010', backend: 'h' }, { now, port: 9000 })).message).toContain(
      'the path says 9000',
    );
  });

  it('a path FIRST-LAST gives the last port to a body without one; a body naming other ports is refused', () => {
    const path = { now, port: 9000, portEnd: 9010 };
    expect(parseStreamInput({ backend: 'h' }, path)).toMatchObject({ port: 9000, portEnd: 9010 });
    expect(parseStreamInput({ port: 9000, backend: 'h' }, path)).toMatchObject({ port: 9000, portEnd: 9010 });
    expect(parseStreamInput({ port: '9000', backend: 'h' }, path)).toMatchObject({ port: 9000, portEnd: 9010 });
    expect(parseStreamInput({ port: '9000-9010', backend: 'h' }, path)).toMatchObject({ port: 9000, portEnd: 9010 });
    expect(parseStreamInput({ portEnd: 9010, backend: 'h' }, path)).toMatchObject({ port: 9000, portEnd: 9010 });
    expect(refusal(() => parseStreamInput({ port: '9000-9005', backend: 'h' }, path)).message).toBe(
      'port: the body names ports 9000-9005 but the path names 9000-9010',
    );
    expect(refusal(() => parseStreamInput({ portEnd: 9020, backend: 'h' }, path)).message).toBe(
      'port: the body names ports 9000-9020 but the path names 9000-9010',
    );
    expect(refusal(() => parseStreamInput({ port: '9000-9000', backend: 'h:1' }, path)).message).toBe(
      'port: the body names port 9000 but the path names 9000-9010',
    );
  });
});

describe('range helpers', () => {
  it('lists, formats, overlaps and shifts', () => {
    expect(portsOf({ port: 5, portEnd: 8 })).toEqual([5, 6, 7, 8]);
    expect(portsOf({ port: 5 })).toEqual([5]);
    expect(formatPorts({ port: 5, portEnd: 8 })).toBe('5-8');
    expect(spansOverlap({ port: 5, portEnd: 8 }, { port: 8 })).toBe(true);
    expect(spansOverlap({ port: 5, portEnd: 8 }, { port: 9, portEnd: 12 })).toBe(false);
    expect(backendForPort('h:40000', { port: 30000, portEnd: 30100 }, 30050)).toBe('h:40050');
    expect(backendForPort('[::1]:30000', { port: 30000, portEnd: 30100 }, 30100)).toBe('[::1]:30100');
    expect(describeStreamBackends({ port: 30000, portEnd: 30100, backends: [{ address: 'h:40000' }] })).toBe(
      'h:40000-40100',
    );
  });

  it('refuses a range not wholly inside PORT_RANGE, naming its first port outside', () => {
    const range = { start: 30000, end: 30100 };
    expect(() => assertSpanInRange({ port: 30000, portEnd: 30100 }, range)).not.toThrow();
    const error = refusal(() => assertSpanInRange({ port: 30050, portEnd: 30150 }, range));
    expect(error.code).toBe(ErrorCode.PortOutOfRange);
    expect(error.message).toContain('(port 30101 is outside)');
    expect(refusal(() => assertSpanInRange({ port: 29990, portEnd: 30010 }, range)).message).toContain(
      '(port 29990 is outside)',
    );
  });
});
