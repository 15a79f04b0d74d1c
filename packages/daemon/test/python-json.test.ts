/**
 * Every expected string below was produced by CPython's `json.dumps` with default arguments and
 * copied here verbatim, so pythonJson is held to the old service's bytes.
 */
import { describe, expect, it } from '@jest/globals';
import { pythonJson } from '../src/http/python-json.js';

describe('pythonJson', () => {
  it.each<[string, unknown, string]>([
    ['legacy ok answer', { result: 'ok', errors: '' }, '{"result": "ok", "errors": ""}'],
    ['legacy boolean-as-text answer', { result: 'false' }, '{"result": "false"}'],
    [
      'legacy stream listing',
      { streams: [{ port: 9000, backend: '10.0.0.5:5432' }], count: 1 },
      '{"streams": [{"port": 9000, "backend": "10.0.0.5:5432"}], "count": 1}',
    ],
    ['empty object', {}, '{}'],
    ['empty array', [], '[]'],
    ['nested arrays', [1, [2, [3, []]], {}], '[1, [2, [3, []]], {}]'],
    [
      'nested objects with null and booleans',
      { a: [1, 2, { b: null }], c: { d: true, e: false } },
      '{"a": [1, 2, {"b": null}], "c": {"d": true, "e": false}}',
    ],
    ['numbers', [0, -1, 1.5, 123456789, -0.25, 1e21], '[0, -1, 1.5, 123456789, -0.25, 1e+21]'],
    ['null', null, 'null'],
    ['true', true, 'true'],
    ['false', false, 'false'],
    ['integer', 42, '42'],
    ['empty string', '', '""'],
  ])('%s', (_what, value, expected) => {
    expect(pythonJson(value)).toBe(expected);
  });

  it.each<[string, string, string]>([
    ['Latin-1 letter', 'héllo', '"h\\u00e9llo"'],
    ['several accents', 'naïve café ü', '"na\\u00efve caf\\u00e9 \\u00fc"'],
    ['CJK', '日本語', '"\\u65e5\\u672c\\u8a9e"'],
    ['astral emoji as a surrogate pair', '😀', '"\\ud83d\\ude00"'],
    ['astral symbol between ASCII', 'a𝄞b', '"a\\ud834\\udd1eb"'],
    ['C0 controls and DEL', '\x00\x01\x1f\x7f', '"\\u0000\\u0001\\u001f\\u007f"'],
    ['short escapes', 'tab\tnl\nret\rbs\bff\f', '"tab\\tnl\\nret\\rbs\\bff\\f"'],
    ['quote, backslash, slash', 'quote" backslash\\ slash/', '"quote\\" backslash\\\\ slash/"'],
    ['line and paragraph separators', '\u2028\u2029', '"\\u2028\\u2029"'],
    ['edges of the BMP', '\u0080\u00ff\u0100\uffff', '"\\u0080\\u00ff\\u0100\\uffff"'],
    ['plain ASCII', 'port 9000 -> a:1 ~', '"port 9000 -> a:1 ~"'],
  ])('escapes a string: %s', (_what, value, expected) => {
    expect(pythonJson(value)).toBe(expected);
  });

  it('escapes non-ASCII keys and values alike', () => {
    expect(pythonJson({ ü: 'é', 'key with "quote"': ['x', null] })).toBe(
      '{"\\u00fc": "\\u00e9", "key with \\"quote\\"": ["x", null]}',
    );
  });

  it('escapes non-ASCII text inside nested structures', () => {
    expect(pythonJson({ result: 'error', errors: ['backend "h\u00f4te:1": bad', { why: '😀' }] })).toBe(
      '{"result": "error", "errors": ["backend \\"h\\u00f4te:1\\": bad", {"why": "\\ud83d\\ude00"}]}',
    );
  });

  it('keeps the order of object keys', () => {
    expect(pythonJson({ z: 1, a: 2, m: 3 })).toBe('{"z": 1, "a": 2, "m": 3}');
  });

  it.each<[string, unknown, string]>([
    ['an undefined field', { a: undefined, b: 1 }, '{"b": 1}'],
    ['every field undefined', { a: undefined }, '{}'],
    ['an undefined field in a nested object', { outer: { gone: undefined, kept: 'x' } }, '{"outer": {"kept": "x"}}'],
    ['undefined inside an array (as JSON.stringify does)', [undefined, 1], '[null, 1]'],
  ])('drops or nulls undefined: %s', (_what, value, expected) => {
    expect(pythonJson(value)).toBe(expected);
  });

  it('never emits a non-ASCII byte', () => {
    const text = pythonJson({ all: Array.from({ length: 0x300 }, (_, code) => String.fromCharCode(code)).join('') });
    expect(/^[\x20-\x7e]*$/.test(text)).toBe(true);
    expect(JSON.parse(text)).toEqual({
      all: Array.from({ length: 0x300 }, (_, code) => String.fromCharCode(code)).join(''),
    });
  });
});
