/**
 * The API's tokens: one from CONDUCTOR_TOKEN, or one or several named ones from
 * CONDUCTOR_TOKEN_FILE, and the refusal to serve a non-loopback address without any.
 */
import { isTokenText } from '@stream-conductor/shared';
import type { SettingValues } from './values.js';

/** What a token may do: `read` only looks (listings, status, stats, events, metrics); `write` may also change. */
export type TokenRole = 'read' | 'write';

export interface NamedToken {
  name: string;
  token: string;
  role: TokenRole;
}

export interface Auth {
  /** API tokens, each with the name the audit log records and its role; empty: no authentication. */
  tokens: NamedToken[];
  /** The operator's explicit consent to serve the API on a non-loopback address without a token. */
  allowNoAuth: boolean;
}

const TOKEN_NAME = /^[a-z0-9][a-z0-9_.-]{0,31}$/;

export function isLoopback(address: string): boolean {
  return address === '::1' || /^127\./.test(address) || address === 'localhost';
}

const LINE_FORMAT =
  'expected "<name> <token>" or "<name> <token> read|write", with a name of lowercase letters, digits, _ . -';

/** A token of a token file with the line it came from (counted from 1, comments and blank lines included). */
interface FileToken extends NamedToken {
  line: number;
}

/**
 * The tokens of a token file: one token alone (a write token named `token`, as before roles), or
 * one "<name> <token> [read|write]" per line, write when the role is left out (# comments and
 * blank lines ignored). A bad line is refused with its number; the token itself is never echoed.
 */
export function parseTokenFile(file: string, text: string): FileToken[] {
  const lines = text
    .split('\n')
    .map((line, index) => ({ text: line.trim(), line: index + 1 }))
    .filter(({ text: line }) => line !== '' && !line.startsWith('#'));
  if (lines.length === 0) throw new Error(`${file} holds no token`);
  const tokens: FileToken[] = [];
  for (const { text: line, line: number } of lines) {
    const parts = line.split(/\s+/);
    const [first = '', second = '', role = 'write'] = parts;
    if (parts.length === 1 && lines.length === 1) {
      tokens.push({ name: 'token', token: first, role: 'write', line: number });
      continue;
    }
    if (parts.length < 2 || parts.length > 3 || !TOKEN_NAME.test(first)) {
      throw new Error(`${file} line ${number}: ${LINE_FORMAT}`);
    }
    if (role !== 'read' && role !== 'write') {
      // A word shorter than any token is shown; anything longer might be a token in the wrong place.
      const shown = role.length < 16 && isTokenText(role) ? `, got ${JSON.stringify(role)}` : ' (the third field)';
      throw new Error(`${file} line ${number}: the role must be read or write${shown}`);
    }
    tokens.push({ name: first, token: second, role, line: number });
  }
  return tokens;
}

/** Checks each token's text, and that names and tokens are each used once. Throws plain errors. */
function checkTokens(tokens: Array<NamedToken & { line?: number }>, file: string | undefined): void {
  const names = new Set<string>();
  const seen = new Map<string, string>();
  for (const { name, token, line } of tokens) {
    const where = line === undefined ? '' : `${file} line ${line}: `;
    if (token.length < 16)
      throw new Error(`${where}the token must be at least 16 characters long (got ${token.length})`);
    if (!isTokenText(token)) throw new Error(`${where}the token may hold only printable ASCII without spaces`);
    if (names.has(name)) throw new Error(`${where}the token name ${name} appears twice`);
    const other = seen.get(token);
    if (other !== undefined) throw new Error(`${where}the token of ${name} is the same as the token of ${other}`);
    names.add(name);
    seen.set(token, name);
  }
}

/** Reads the tokens; a token file others can read goes to `exposed`. */
export function readAuth(values: SettingValues, bindAddress: string, exposed: string[]): Auth {
  const token = values.raw('token');
  const tokenFile = values.path('tokenFile');
  if (token !== undefined && tokenFile !== undefined) {
    values.fail('tokenFile', 'set either CONDUCTOR_TOKEN or CONDUCTOR_TOKEN_FILE, not both');
  }
  const which = tokenFile !== undefined ? 'tokenFile' : 'token';
  const tokens = values.checked(which, () => {
    const found: Array<NamedToken & { line?: number }> = [];
    // A single CONDUCTOR_TOKEN, like a token file of one token alone, may do everything.
    if (token !== undefined) found.push({ name: 'token', token, role: 'write' });
    if (tokenFile !== undefined)
      found.push(...parseTokenFile(tokenFile, values.secret('tokenFile', tokenFile, exposed)));
    checkTokens(found, tokenFile);
    return found.map(({ name, token: text, role }) => ({ name, token: text, role }));
  });
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
