/** The record rules both services share: expiry, times, renewal, the label filter. */
import { describe, expect, it } from '@jest/globals';
import { isExpired } from '../src/service/expiry.js';
import { renewedSpec, specOf, stampRecord } from '../src/service/records.js';
import { matchesFilter } from '../src/service/service.js';
import { CREATED_AT, record } from './service-fakes.js';

const NOW = new Date('2026-12-04T12:00:00.000Z');

describe('isExpired', () => {
  it.each<[string | undefined, boolean]>([
    [undefined, false],
    ['2026-12-04T11:59:59.999Z', true],
    ['2026-12-04T12:00:00.000Z', true],
    ['2026-12-04T12:00:00.001Z', false],
  ])('expiresAt %s: %s', (expiresAt, expected) => {
    expect(isExpired(expiresAt === undefined ? {} : { expiresAt }, NOW)).toBe(expected);
  });
});

describe('record times', () => {
  it('stamps a new record with its creation time only', () => {
    expect(stampRecord(specOf(record(9000)), undefined, NOW)).toEqual({
      ...specOf(record(9000)),
      createdAt: NOW.toISOString(),
    });
  });

  it('keeps the creation time of the record it replaces', () => {
    const replaced = stampRecord(
      specOf(record(9000, 'b:1')),
      { ...record(9000), updatedAt: '2026-12-02T00:00:00.000Z' },
      NOW,
    );
    expect(replaced).toMatchObject({
      createdAt: CREATED_AT,
      updatedAt: NOW.toISOString(),
      backends: [{ address: 'b:1' }],
    });
  });
});

describe('renewedSpec', () => {
  it('sets a new expiry, or none', () => {
    const expiring = { ...record(9000), expiresAt: '2026-12-05T00:00:00.000Z', updatedAt: CREATED_AT };
    expect(renewedSpec(expiring, '2026-12-06T00:00:00.000Z')).toEqual({
      ...specOf(record(9000)),
      expiresAt: '2026-12-06T00:00:00.000Z',
    });
    expect(renewedSpec(expiring, undefined)).toEqual(specOf(record(9000)));
    expect(expiring.expiresAt).toBe('2026-12-05T00:00:00.000Z');
  });
});

describe('matchesFilter', () => {
  it.each<[Array<[string, string]> | undefined, boolean]>([
    [undefined, true],
    [[], true],
    [[['env', 'prod']], true],
    [
      [
        ['env', 'prod'],
        ['team', 'edge'],
      ],
      true,
    ],
    [[['env', 'test']], false],
    [[['missing', '']], false],
  ])('labels %j: %s', (labels, expected) => {
    expect(matchesFilter({ env: 'prod', team: 'edge' }, labels === undefined ? {} : { labels })).toBe(expected);
  });
});
