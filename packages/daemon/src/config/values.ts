/**
 * How one setting is read: its flag wins over its variable, which wins over its default; an empty
 * value counts as unset. A bad value is refused with a StartupError (BadConfig) that names the
 * variable and the flag, the one line the daemon prints before it exits.
 */
import { readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { StartupError } from '@stream-conductor/shared';
import { type Setting, type SettingName, type SettingWithFallback, settings } from './settings.js';

/** Setting values given on the command line, as text. */
export type SettingArgs = Partial<Record<SettingName, string>>;

/** The refusal of a setting's value: `<VARIABLE> (--<flag>): <message>`. */
export function badSetting(name: SettingName, message: string, hint?: string): StartupError {
  const setting: Setting = settings[name];
  return new StartupError(`${setting.env} (--${setting.flag}): ${message}`, { hint });
}

function reasonOf(error: unknown): string {
  return (error as NodeJS.ErrnoException).code ?? (error as Error).message;
}

export class SettingValues {
  constructor(
    private readonly env: NodeJS.ProcessEnv,
    private readonly args: SettingArgs,
    /** Anchors relative paths. */
    readonly cwd: string,
  ) {}

  /** The value as given, or undefined when it is not. */
  raw(name: SettingName): string | undefined {
    const fromFlag = this.args[name];
    if (fromFlag !== undefined && fromFlag !== '') return fromFlag;
    const fromEnv = this.env[settings[name].env];
    return fromEnv === undefined || fromEnv === '' ? undefined : fromEnv;
  }

  /** The value as given, or its default from the table. */
  text(name: SettingWithFallback): string {
    return this.raw(name) ?? settings[name].fallback;
  }

  fail(name: SettingName, message: string, hint?: string): never {
    throw badSetting(name, message, hint);
  }

  /** Runs `parse`; an error it throws (a refusal of another setting aside) refuses this setting. */
  checked<T>(name: SettingName, parse: () => T): T {
    try {
      return parse();
    } catch (error) {
      if (error instanceof StartupError) throw error;
      return this.fail(name, (error as Error).message);
    }
  }

  bool(name: SettingName): boolean {
    const value = this.raw(name);
    if (value === undefined) return false;
    if (/^(1|true|yes|on)$/i.test(value)) return true;
    if (/^(0|false|no|off)$/i.test(value)) return false;
    return this.fail(name, `expected true or false, got ${JSON.stringify(value)}`);
  }

  /** An absolute path, or undefined when the setting is not given. */
  path(name: SettingName): string | undefined {
    const value = this.raw(name);
    if (value === undefined) return undefined;
    if (value.includes('\0') || /[\n\r]/.test(value)) this.fail(name, 'a path may not hold NUL or line breaks');
    return resolve(this.cwd, value);
  }

  /** An IPv4 or IPv6 address (brackets taken off). */
  ipAddress(name: SettingName, value: string): string {
    const bare = value.startsWith('[') && value.endsWith(']') ? value.slice(1, -1) : value;
    // Zone ids (fe80::1%eth0) pass isIP but nginx's listen and proxy_pass refuse them.
    if (isIP(bare) === 0 || bare.includes('%')) {
      this.fail(name, `expected an IPv4 or IPv6 address, got ${JSON.stringify(value)}`);
    }
    return bare;
  }

  /** A number of seconds from `min` to `max` (decimals allowed), in milliseconds. */
  milliseconds(name: SettingWithFallback, min: number, max: number): number {
    const text = this.text(name);
    const value = Number(text);
    if (!/^[0-9]+(\.[0-9]+)?$/.test(text) || value < min || value > max) {
      this.fail(name, `expected a number of seconds from ${min} to ${max}, got ${JSON.stringify(text)}`);
    }
    return Math.round(value * 1000);
  }

  /** A whole number from `min` to `max`, written with at most `digits` digits. */
  wholeNumber(name: SettingWithFallback, min: number, max: number, digits: number): number {
    const text = this.text(name);
    const value = Number(text);
    if (!new RegExp(`^[0-9]{1,${digits}}$`).test(text) || value < min || value > max) {
      this.fail(name, `expected a whole number from ${min} to ${max}, got ${JSON.stringify(text)}`);
    }
    return value;
  }

  /** Checks that the file a setting names can be read. */
  readable(name: SettingName, file: string): void {
    try {
      readFileSync(file);
    } catch (error) {
      this.fail(name, `cannot read ${file}: ${reasonOf(error)}`);
    }
  }

  /** The text of a file of secrets; adds it to `exposed` when users other than its owner and group can read it. */
  secret(name: SettingName, file: string, exposed: string[]): string {
    try {
      const text = readFileSync(file, 'utf8');
      if ((statSync(file).mode & 0o007) !== 0) exposed.push(file);
      return text;
    } catch (error) {
      return this.fail(name, `cannot read ${file}: ${reasonOf(error)}`);
    }
  }
}
