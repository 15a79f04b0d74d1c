import { describe, expect, it } from '@jest/globals';
import { bearerMatches } from '../src/http/auth.js';

const TOKEN = 's3cr3t-t0ken-0123456789';

describe('bearerMatches', () => {
  it.each<[string, string | undefined, boolean]>([
    ['exact', `Bearer ${TOKEN}`, true],
    ['lowercase "bearer"', `bearer ${TOKEN}`, true],
    ['uppercase "BEARER"', `BEARER ${TOKEN}`, true],
    ['several spaces after "Bearer"', `Bearer   ${TOKEN}`, true],
    ['trailing spaces', `Bearer ${TOKEN}  `, true],
    ['wrong token', 'Bearer wrong-token-0123456789xx', false],
    ['token in another case', `Bearer ${TOKEN.toUpperCase()}`, false],
    ['a prefix of the token', `Bearer ${TOKEN.slice(0, -1)}`, false],
    ['the token and more', `Bearer ${TOKEN}x`, false],
    ['the token twice', `Bearer ${TOKEN}${TOKEN}`, false],
    ['missing "Bearer"', TOKEN, false],
    ['"Bearer" without a space', `Bearer${TOKEN}`, false],
    ['another scheme', `Basic ${TOKEN}`, false],
    ['"Bearer" alone', 'Bearer', false],
    ['"Bearer" and a space', 'Bearer ', false],
    ['a leading space', ` Bearer ${TOKEN}`, false],
    ['a tab instead of a space', `Bearer\t${TOKEN}`, false],
    ['a second word after the token', `Bearer ${TOKEN} extra`, false],
    ['the token split by a space', `Bearer ${TOKEN.slice(0, 5)} ${TOKEN.slice(5)}`, false],
    ['empty header', '', false],
    ['no header', undefined, false],
  ])('%s -> %j', (_what, header, expected) => {
    expect(bearerMatches(TOKEN, header)).toBe(expected);
  });

  it.each<[string, string | undefined]>([
    ['an empty header', ''],
    ['no header', undefined],
    ['"Bearer" and a space', 'Bearer '],
  ])('an empty expected token never matches %s', (_what, header) => {
    expect(bearerMatches('', header)).toBe(false);
  });

  it('compares the whole token, whatever its length', () => {
    const long = 'x'.repeat(4096);
    expect(bearerMatches(long, `Bearer ${long}`)).toBe(true);
    expect(bearerMatches(long, `Bearer ${long.slice(1)}y`)).toBe(false);
    expect(bearerMatches(long, `Bearer ${'x'.repeat(4095)}`)).toBe(false);
  });
});
