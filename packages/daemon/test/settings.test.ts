import { readFileSync } from 'node:fs';
import { describe, expect, it } from '@jest/globals';
import { StartupError } from '@stream-conductor/shared';
import { readConfig } from '../src/config/read.js';
import { settingRows, usage } from '../src/config/settings.js';

const README = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');

/** The README's table of settings: the cells of each row, by variable. */
function readmeRows(): Map<string, string[]> {
  const rows = new Map<string, string[]>();
  for (const line of README.split('\n')) {
    const cells = line.split(' | ').map((cell) => cell.replace(/^\| |\s*\|$/g, '').trim());
    const variable = /^`([A-Z_]+)`$/.exec(cells[0] ?? '')?.[1];
    if (variable !== undefined && cells.length === 4 && /^`--/.test(cells[1] ?? '')) rows.set(variable, cells);
  }
  return rows;
}

describe('the settings table', () => {
  it('gives usage a line for every setting, with its default', () => {
    const text = usage();
    for (const [, setting] of settingRows()) {
      const line = text.split('\n').find((one) => one.includes(` ${setting.env} `));
      expect(line).toContain(`--${setting.flag}`);
      if (setting.fallback !== undefined && !setting.helpNamesFallback)
        expect(line).toMatch(new RegExp(`\\(default ${setting.fallback.replace(/[.]/g, '\\.')}\\)$`));
    }
  });

  it('its defaults are what readConfig uses when nothing is set', () => {
    const config = readConfig({}, {}, '/srv/app');
    expect(config.home).toBe('/srv/app/.conductor');
    expect(`${config.portRange.start}-${config.portRange.end}`).toBe(
      settingRows().find(([name]) => name === 'portRange')?.[1].fallback,
    );
  });

  it('the README mirrors it: each row names the flag and the default of its variable', () => {
    const rows = readmeRows();
    for (const [name, setting] of settingRows()) {
      // The fleet's settings are described with fleet mode, outside the table.
      if (name.startsWith('etcd') || name === 'hostId' || name === 'advertiseUrl') {
        expect(README).toContain(setting.env);
        continue;
      }
      const row = rows.get(setting.env);
      expect(row?.[1]).toBe(`\`--${setting.flag}\``);
      if (setting.fallback !== undefined) expect(row?.[2]).toBe(`\`${setting.fallback}\``);
    }
  });
});

describe('a refusal at start-up', () => {
  it('keeps what to do apart from what is wrong, and prints both on one line', () => {
    let error: unknown;
    try {
      readConfig({ BIND_ADDRESS: '0.0.0.0' }, {}, '/srv/app');
    } catch (thrown) {
      error = thrown;
    }
    expect(error).toBeInstanceOf(StartupError);
    const refusal = error as StartupError;
    expect(refusal.message).toBe('BIND_ADDRESS (--bind-address): refusing to serve the API on 0.0.0.0 without a token');
    expect(refusal.hint).toMatch(/^set CONDUCTOR_TOKEN \(--token\)/);
    expect(refusal.line()).toBe(`${refusal.message}; ${refusal.hint}`);
  });
});
