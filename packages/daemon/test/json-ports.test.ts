/** Ports in a JSON body's text: only decimal digits are taken (see src/http/json-ports.ts). */
import { describe, expect, it } from '@jest/globals';
import { ConductorError } from '@stream-conductor/shared';
import { nonDecimalPortNumbers, refuseNonDecimalPorts } from '../src/http/json-ports.js';

function refusal(text: string): string | undefined {
  try {
    refuseNonDecimalPorts(text);
    return undefined;
  } catch (error) {
    if (error instanceof ConductorError) return `${error.code} ${error.message}`;
    throw error;
  }
}

describe('nonDecimalPortNumbers', () => {
  it('finds a port written as an exponent, a fraction or negative, with its path', () => {
    expect(nonDecimalPortNumbers('{"port": 1.8151e4, "backend": "a:1"}')).toEqual([
      { path: ['port'], text: '1.8151e4' },
    ]);
    expect(nonDecimalPortNumbers('{"streams": [{"port": 9000}, {"labels": {"a": "b"}, "port":18151.0}]}')).toEqual([
      { path: ['streams', 1, 'port'], text: '18151.0' },
    ]);
    expect(nonDecimalPortNumbers('{"port":-0}')).toEqual([{ path: ['port'], text: '-0' }]);
    expect(nonDecimalPortNumbers('{"po\\u0072t": 1E4}')).toEqual([{ path: ['port'], text: '1E4' }]);
  });

  it('leaves decimal ports, strings, and numbers under other keys alone', () => {
    expect(
      nonDecimalPortNumbers('{"port": 18151, "weight": 1.5, "description": "\\"port\\": 1e4", "x": ["port", 1e4]}'),
    ).toEqual([]);
    expect(nonDecimalPortNumbers('{"port": "1e4"}')).toEqual([]);
  });

  it('walks deep nesting without recursion, and never throws on text that is not JSON', () => {
    expect(nonDecimalPortNumbers(`${'['.repeat(200_000)}{"port": 1e4}${']'.repeat(200_000)}`)).toHaveLength(1);
    for (const text of ['', '{', '"', '{"port":', '}}]]', '{"port": 1e', '\\"port\\": 1e4', '{"port" 1.5'])
      expect(() => nonDecimalPortNumbers(text)).not.toThrow();
  });
});

describe('refuseNonDecimalPorts', () => {
  it('refuses a stream port not in decimal digits, naming the value as the API does for text', () => {
    expect(refusal('{"port": 1.8151e4, "backend": "a:1"}')).toBe(
      'INVALID_INPUT port must be a whole number from 1 to 65535, got "1.8151e4"',
    );
    expect(refusal('{"streams": [{"port": 9000}, {"port": 9001.0}]}')).toBe(
      'INVALID_INPUT streams[1]: port must be a whole number from 1 to 65535, got "9001.0"',
    );
  });

  it('takes decimal ports, and leaves a port key elsewhere (a label) to the spec', () => {
    expect(refusal('{"port": 18151, "backend": "a:1"}')).toBeUndefined();
    expect(refusal('{"streams": [{"port": 9000, "labels": {"port": 1.5}}]}')).toBeUndefined();
  });
});
