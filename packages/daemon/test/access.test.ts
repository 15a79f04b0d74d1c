import { describe, expect, it } from '@jest/globals';
import { accessFor, normalisedPath } from '../src/http/access.js';

describe('accessFor', () => {
  it.each<[string, string]>([
    ['GET', '/status'],
    ['GET', '/getstreams'],
    ['GET', '/hasstream/9000'],
    ['GET', '/getfreeport'],
    ['GET', '/metrics'],
    ['GET', '/v1/status'],
    ['GET', '/v1/openapi.json'],
    ['GET', '/v1/streams'],
    ['GET', '/v1/streams/9000'],
    ['GET', '/v1/events'],
    ['GET', '/v1/free-port'],
    ['HEAD', '/v1/streams'],
    ['POST', '/v1/streams/9000/health'],
    // Express matches without regard to case or a trailing slash: so does the check.
    ['GET', '/GetStreams'],
    ['GET', '/v1/streams/'],
    ['get', '/v1/status'],
  ])('%s %s only reads', (method, path) => {
    expect(accessFor(method, path)).toBe('read');
  });

  it.each<[string, string]>([
    ['GET', '/createstream/9000/127.0.0.1:22'],
    ['GET', '/removestream/9000'],
    ['HEAD', '/createstream/9000/127.0.0.1:22'],
    ['GET', '/CreateStream/9000/127.0.0.1:22'],
    ['GET', '/removestream/9000/'],
    ['POST', '/v1/streams'],
    ['PUT', '/v1/streams/9000'],
    ['DELETE', '/v1/streams/9000'],
    ['POST', '/v1/streams/9000/renew'],
    ['POST', '/v1/streams/9000/drain'],
    ['DELETE', '/v1/streams/9000/drain'],
    ['POST', '/v1/apply'],
    // Unknown paths and methods, and paths the check does not decode, need write.
    ['GET', '/v1/streams/9000/renew'],
    ['GET', '/v1/nope'],
    ['GET', '/%67etstreams'],
    ['OPTIONS', '/v1/streams'],
    ['PATCH', '/v1/streams/9000'],
    ['POST', '/v1/status'],
    ['POST', '/v1/streams/9000/health/x'],
    ['GET', '/v1/streams/9000/health'],
  ])('%s %s needs write', (method, path) => {
    expect(accessFor(method, path)).toBe('write');
  });

  it('a dry-run apply only reads; any other apply writes', () => {
    expect(accessFor('POST', '/v1/apply', { streams: [], dryRun: true })).toBe('read');
    expect(accessFor('POST', '/v1/apply/', { streams: [], dryRun: true })).toBe('read');
    for (const body of [
      { streams: [] },
      { streams: [], dryRun: false },
      { streams: [], dryRun: 'true' },
      { streams: [], dryRun: 1 },
      [{ dryRun: true }],
      undefined,
      null,
      'dryRun',
    ]) {
      expect(accessFor('POST', '/v1/apply', body)).toBe('write');
    }
    // A dry run that names a TLS file makes the daemon read that file: a write.
    const stream = { port: 9443, backend: '127.0.0.1:8080' };
    expect(accessFor('POST', '/v1/apply', { streams: [stream], dryRun: true })).toBe('read');
    for (const files of [
      { tlsCert: '/etc/shadow', tlsKey: '/etc/shadow' },
      { tlsCert: '/etc/ssl/a.pem' },
      { tlsKey: '/root/.ssh/id_ed25519' },
      { backendTls: true, backendName: 'localhost', backendCa: '/etc/ssl/ca.pem' },
      { tlsCert: null },
    ]) {
      expect(accessFor('POST', '/v1/apply', { streams: [stream, { ...stream, ...files }], dryRun: true })).toBe(
        'write',
      );
    }
    for (const streams of [{ 0: { tlsCert: '/a' } }, [null], ['x'], [[{ tlsCert: '/a' }]]])
      expect(accessFor('POST', '/v1/apply', { streams, dryRun: true })).toBe('write');
    // The body makes a read of nothing else.
    expect(accessFor('POST', '/v1/streams', { dryRun: true })).toBe('write');
    expect(accessFor('PUT', '/v1/apply', { dryRun: true })).toBe('write');
  });

  it('normalises the path as the router matches it, decoding nothing', () => {
    expect(normalisedPath('/V1/Streams//')).toBe('/v1/streams');
    expect(normalisedPath('/')).toBe('/');
    expect(normalisedPath('')).toBe('/');
    expect(normalisedPath('/%41')).toBe('/%41');
  });
});
