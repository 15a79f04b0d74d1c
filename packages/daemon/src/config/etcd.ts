/**
 * Where the stream definitions live: this host's file, or a fleet's etcd with its endpoints, key
 * prefix, this host's name and address, TLS files and etcd user.
 */
import { hostname } from 'node:os';
import type { SettingValues } from './values.js';

export type StoreConfig =
  | { kind: 'file' }
  | {
      kind: 'etcd';
      /** Client URLs of the etcd members (http:// or https://). */
      endpoints: string[];
      /** Key prefix of this fleet, ending with '/'. */
      prefix: string;
      /** This host's name in the fleet. */
      hostId: string;
      /** The API URL this host announces to the fleet. */
      advertiseUrl: string;
      /** TLS: CA, client certificate and key (PEM files), for mutual TLS. */
      tls?: { ca: string; cert?: string; key?: string };
      /** etcd's own authentication. */
      auth?: { user: string; password: string };
    };

/** A fleet host's name: it is part of etcd keys and shown in every host's status. */
export const HOST_ID = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

/** The API's address, from which the address this host announces is made when none is given. */
export interface ApiAddress {
  bindAddress: string;
  bindPort: number;
  /** The API serves HTTPS. */
  https?: boolean;
}

/** The endpoints of `etcd://host:port[,host:port...]` (etcds:// for TLS). Throws plain errors. */
function parseEndpoints(text: string): { scheme: 'http' | 'https'; endpoints: string[] } {
  // A password in the address would be echoed in the error below, and in logs: never taken.
  if (/^etcds?:\/\/[^/?#]*@/.test(text)) {
    throw new Error('credentials do not go in the address: use CONDUCTOR_ETCD_USER and CONDUCTOR_ETCD_PASSWORD_FILE');
  }
  const match = /^(etcds?):\/\/([^/?#]+)\/?$/.exec(text);
  if (!match) throw new Error(`expected file or etcd://host:port[,host:port...], got ${JSON.stringify(text)}`);
  const scheme = match[1] === 'etcds' ? 'https' : 'http';
  const endpoints = (match[2] ?? '').split(',').map((member) => {
    let url: URL;
    try {
      url = new URL(`${scheme}://${member}`);
    } catch {
      throw new Error(`${JSON.stringify(member)} is not host:port`);
    }
    if (url.port === '' || url.username !== '' || url.pathname !== '/')
      throw new Error(`${JSON.stringify(member)} is not host:port`);
    return url.origin;
  });
  return { scheme, endpoints };
}

function readPrefix(values: SettingValues): string {
  const text = values.text('etcdPrefix');
  if (!/^\/[A-Za-z0-9_./-]{0,200}$/.test(text) || text.includes('//')) {
    values.fail(
      'etcdPrefix',
      `expected a key prefix such as /stream-conductor/ (letters, digits, _ . - /), got ${JSON.stringify(text)}`,
    );
  }
  return text.endsWith('/') ? text : `${text}/`;
}

function readHostId(values: SettingValues): string {
  const text = values.raw('hostId') ?? hostname().toLowerCase();
  if (!HOST_ID.test(text)) {
    values.fail(
      'hostId',
      `expected a name of lowercase letters, digits, _ . - (at most 63), got ${JSON.stringify(text)}`,
    );
  }
  return text;
}

function readTls(
  values: SettingValues,
  scheme: 'http' | 'https',
): { ca: string; cert?: string; key?: string } | undefined {
  const ca = values.path('etcdCa');
  const cert = values.path('etcdCert');
  const key = values.path('etcdKey');
  if ((cert === undefined) !== (key === undefined)) {
    values.fail(
      cert === undefined ? 'etcdCert' : 'etcdKey',
      'mutual TLS needs both CONDUCTOR_ETCD_CERT and CONDUCTOR_ETCD_KEY',
    );
  }
  if ((ca !== undefined || cert !== undefined) && scheme !== 'https') {
    values.fail('store', 'TLS files are given: use etcds:// for the endpoints');
  }
  for (const [name, file] of [
    ['etcdCa', ca],
    ['etcdCert', cert],
    ['etcdKey', key],
  ] as const) {
    if (file !== undefined) values.readable(name, file);
  }
  if (ca === undefined) return undefined;
  return { ca, ...(cert !== undefined && key !== undefined ? { cert, key } : {}) };
}

function readEtcdAuth(values: SettingValues, exposed: string[]): { user: string; password: string } | undefined {
  const user = values.raw('etcdUser');
  const passwordFile = values.path('etcdPasswordFile');
  if ((user === undefined) !== (passwordFile === undefined)) {
    values.fail(
      user === undefined ? 'etcdUser' : 'etcdPasswordFile',
      'etcd authentication needs both CONDUCTOR_ETCD_USER and CONDUCTOR_ETCD_PASSWORD_FILE',
    );
  }
  if (user === undefined || passwordFile === undefined) return undefined;
  const password = values.secret('etcdPasswordFile', passwordFile, exposed).trim();
  if (password === '') values.fail('etcdPasswordFile', `${passwordFile} is empty`);
  return { user, password };
}

function readAdvertiseUrl(values: SettingValues, api: ApiAddress): string {
  const text = values.raw('advertiseUrl');
  if (text === undefined) {
    const { bindAddress } = api;
    const host = bindAddress.includes(':') ? `[${bindAddress}]` : bindAddress === '0.0.0.0' ? hostname() : bindAddress;
    return `${api.https === true ? 'https' : 'http'}://${host}:${api.bindPort}`;
  }
  try {
    const url = new URL(text);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('not http');
    return url.origin;
  } catch {
    return values.fail('advertiseUrl', `expected an http:// or https:// URL, got ${JSON.stringify(text)}`);
  }
}

/** Reads the store; an etcd password file others can read goes to `exposed`. */
export function readStore(values: SettingValues, api: ApiAddress, exposed: string[]): StoreConfig {
  return values.checked('store', (): StoreConfig => {
    const text = values.text('store');
    if (text === 'file') return { kind: 'file' };
    const { scheme, endpoints } = parseEndpoints(text);
    const prefix = readPrefix(values);
    const hostId = readHostId(values);
    const tls = readTls(values, scheme);
    const auth = readEtcdAuth(values, exposed);
    const config: StoreConfig = {
      kind: 'etcd',
      endpoints,
      prefix,
      hostId,
      advertiseUrl: readAdvertiseUrl(values, api),
    };
    if (tls !== undefined) config.tls = tls;
    if (auth !== undefined) config.auth = auth;
    return config;
  });
}
