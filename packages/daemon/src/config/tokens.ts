/**
 * The API's tokens: one from CONDUCTOR_TOKEN, or one or several named ones from
 * CONDUCTOR_TOKEN_FILE, and the refusal to serve a non-loopback address without any.
 */
import { isTokenText } from '@stream-conductor/shared';
import type { SettingName } from './settings.js';
import type { SettingValues } from './values.js';

export interface NamedToken {
  name: string;
  token: string;
}

export interface Auth {
  /** API tokens, each with the name the audit log records; empty: no authentication. */
  tokens: NamedToken[];
  /** The operator's explicit consent to serve the API on a non-loopback address without a token. */
  allowNoAuth: boolean;
}

const TOKEN_NAME = /^[a-z0-9][a-z0-9_.-]{0,31}$/;

function isLoopback(address: string): boolean {
  return address === '::1' || /^127\./.test(address) || address === 'localhost';
}

/**
 * The tokens of a token file: one token alone, or one "<name> <token>" per line (# comments and
 * blank lines ignored).
 */
function parseTokenFile(values: SettingValues, file: string, text: string): NamedToken[] {
  const lines = text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  const tokens: NamedToken[] = [];
  for (const [index, line] of lines.entries()) {
    const parts = line.split(/\s+/);
    if (parts.length === 1 && lines.length === 1) tokens.push({ name: 'token', token: parts[0] ?? '' });
    else if (parts.length === 2 && TOKEN_NAME.test(parts[0] ?? ''))
      tokens.push({ name: parts[0] ?? '', token: parts[1] ?? '' });
    else {
      values.fail(
        'tokenFile',
        `line ${index + 1}: expected "<name> <token>" with a name of lowercase letters, digits, _ . -`,
      );
    }
  }
  if (lines.length === 0) values.fail('tokenFile', `${file} holds no token`);
  return tokens;
}

function checkTokens(values: SettingValues, which: SettingName, tokens: NamedToken[]): void {
  const names = new Set<string>();
  for (const { name, token } of tokens) {
    if (token.length < 16) values.fail(which, `the token must be at least 16 characters long (got ${token.length})`);
    if (!isTokenText(token)) values.fail(which, 'the token may hold only printable ASCII without spaces');
    if (names.has(name)) values.fail(which, `the token name ${name} appears twice`);
    names.add(name);
  }
}

/** Reads the tokens; a token file others can read goes to `exposed`. */
export function readAuth(values: SettingValues, bindAddress: string, exposed: string[]): Auth {
  const token = values.raw('token');
  const tokenFile = values.path('tokenFile');
  if (token !== undefined && tokenFile !== undefined) {
    values.fail('tokenFile', 'set either CONDUCTOR_TOKEN or CONDUCTOR_TOKEN_FILE, not both');
  }
  const tokens: NamedToken[] = [];
  if (token !== undefined) tokens.push({ name: 'token', token });
  if (tokenFile !== undefined) {
    tokens.push(...parseTokenFile(values, tokenFile, values.secret('tokenFile', tokenFile, exposed)));
  }
  checkTokens(values, tokenFile !== undefined ? 'tokenFile' : 'token', tokens);
  const allowNoAuth = values.bool('allowNoAuth');
  if (tokens.length === 0 && !allowNoAuth && !isLoopback(bindAddress)) {
    values.fail(
      'bindAddress',
      `refusing to serve the API on ${bindAddress} without a token`,
      'set CONDUCTOR_TOKEN (--token) or CONDUCTOR_TOKEN_FILE (--token-file), bind to 127.0.0.1, ' +
        'or opt in with CONDUCTOR_ALLOW_NO_AUTH=1 (--allow-no-auth)',
    );
  }
  return { tokens, allowNoAuth };
}
