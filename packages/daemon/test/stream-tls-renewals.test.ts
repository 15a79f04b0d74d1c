/**
 * TlsRenewals over fakes: a renewal whose change is refused for a passing reason (nginx away, a
 * reload another change made fail) is tried again at the next look, and reported once.
 */
import { chmod, copyFile, mkdtemp, readdir, readFile, rm, stat, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { ConductorError, ErrorCode, parseStreamInput, type StreamRecord } from '@stream-conductor/shared';
import { type Certs, makeCerts } from '../../../tests/helpers/certs.js';
import { silentLogger } from '../src/log.js';
import { checkTlsFiles, restoreCopies, TlsCopies, TlsRenewals } from '../src/service/stream-tls.js';

let dir: string;
let certs: Certs;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sc-tls-renewals-'));
  certs = await makeCerts(dir);
}, 30_000);

afterAll(async () => {
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

describe('TlsRenewals', () => {
  it('tries a renewal refused for a passing reason again at the next look, and reports it once', async () => {
    const now = new Date();
    const spec = parseStreamInput(
      { port: 9443, backend: '127.0.0.1:8080', tlsCert: certs.serverCert, tlsKey: certs.serverKey },
      { now },
    );
    let record = {
      ...spec,
      tlsMaterial: { id: 'an-older-set', certificates: [] },
      createdAt: now.toISOString(),
      updatedAt: now.toISOString(),
    } as StreamRecord;
    const failures = [ErrorCode.NginxUnavailable, ErrorCode.ReloadFailed, ErrorCode.ReloadFailed];
    const puts: string[] = [];
    const recorded: Array<[string, string | undefined]> = [];
    const renewals = new TlsRenewals({
      dir: join(dir, 'stream-tls'),
      now: () => new Date(),
      intervalMs: 1000,
      records: () => [record],
      put: async (next) => {
        puts.push(next.tlsMaterial?.id ?? '');
        const code = failures.shift();
        if (code !== undefined) throw new ConductorError(code, `refused: ${code}`);
        record = { ...record, tlsMaterial: next.tlsMaterial };
        return {};
      },
      record: (_port, result, _detail, message) => recorded.push([result, message]),
      log: silentLogger,
    });
    await renewals.look();
    expect(renewals.problem(9443)).toBe('refused: NGINX_UNAVAILABLE');
    await renewals.look();
    await renewals.look();
    expect(renewals.problem(9443)).toBe('refused: RELOAD_FAILED');
    await renewals.look();
    expect(puts).toHaveLength(4);
    expect(record.tlsMaterial?.id).not.toBe('an-older-set');
    expect(renewals.problem(9443)).toBeUndefined();
    expect(recorded).toEqual([
      ['refused', 'refused: NGINX_UNAVAILABLE'],
      ['refused', 'refused: RELOAD_FAILED'],
      ['ok', undefined],
    ]);
    // Served: the next look leaves it alone.
    await renewals.look();
    expect(puts).toHaveLength(4);
  });
});

describe('TlsCopies', () => {
  it('makes a copy found in place young again and 0600, so the removal of unused copies spares it', async () => {
    const copies = new TlsCopies({ dir: join(dir, 'copies'), now: () => new Date(), records: () => [] });
    const spec = parseStreamInput(
      { port: 9444, backend: '127.0.0.1:8080', tlsCert: certs.serverCert, tlsKey: certs.serverKey },
      { now: new Date() },
    );
    const first = await copies.prepare(spec, false);
    await copies.release([first], false);
    const key = first.tlsMaterial?.key as string;
    const old = new Date(Date.now() - 3600_000);
    await utimes(key, old, old);
    await chmod(key, 0o644);
    const again = await copies.prepare(spec, false);
    const info = await stat(key);
    expect(Date.now() - info.mtimeMs).toBeLessThan(60_000);
    expect(info.mode & 0o777).toBe(0o600);
    await copies.release([again], false);
    expect((await readdir(join(dir, 'copies'))).sort()).toHaveLength(2);
  });
});

describe('restoreCopies', () => {
  it('never serves a copy a store names outside stream-tls/: it makes the copies again from the operator files', async () => {
    const now = new Date();
    const copies = join(dir, 'restore', 'stream-tls');
    const spec = parseStreamInput(
      { port: 9444, backend: '127.0.0.1:8080', tlsCert: certs.serverCert, tlsKey: certs.serverKey },
      { now },
    );
    const made = await checkTlsFiles(spec, copies, now);
    // As a hand-edited store would have it: copies with the right contents, outside stream-tls/.
    const id = made.material.id;
    const record = {
      ...spec,
      tlsMaterial: { ...made.material, cert: join(dir, `${id}.cert.pem`), key: join(dir, `${id}.key.pem`) },
      createdAt: now.toISOString(),
    } as StreamRecord;
    await copyFile(certs.serverCert, join(dir, `${id}.cert.pem`));
    await copyFile(certs.serverKey, join(dir, `${id}.key.pem`));
    const restored = await restoreCopies(record, copies, now);
    expect(restored?.id).toBe(id);
    expect(restored?.key).toBe(join(copies, `${id}.key.pem`));
    expect(restored?.cert).toBe(join(copies, `${id}.cert.pem`));
    expect(await readFile(restored?.key ?? '')).toEqual(await readFile(certs.serverKey));
  });
});
