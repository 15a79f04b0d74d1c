/**
 * The TLS files of streams. An operator names a certificate, its key and a CA by path; the daemon
 * reads them, checks them (readable, PEM, the key the certificate's, valid now) and copies them
 * into its own folder ($CONDUCTOR_HOME/stream-tls, 0700, files 0600) under a name made of their
 * content's digest. nginx reads those copies: its master (the daemon's user, or root for an
 * external nginx) can read them whoever owns the originals, and a renewal written half-way, or a
 * file removed, never reaches nginx: only a set that passed the check does.
 *
 * TlsRenewals looks at the operator's files every few seconds (size, modification time, inode)
 * and, when they changed, checks them again; a set that passes is served through the verified
 * pipeline (one reload), a set that does not is logged and reported on the stream (tlsProblem) and
 * in the audit log, and the certificate in use is kept.
 */
import { createHash, createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import {
  chmod,
  type FileHandle,
  mkdir,
  open,
  readdir,
  readFile,
  readlink,
  realpath,
  rename,
  stat,
  unlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import {
  type CertificateFacts,
  ConductorError,
  ErrorCode,
  printable,
  type StreamRecord,
  type StreamSpec,
  sameSpec,
  type TlsMaterial,
  usesTls,
} from '@stream-conductor/shared';
import type { Logger } from '../log.js';
import { isNginxSafePath } from '../nginx/render.js';
import { filesSignature } from '../sys/files.js';
import { specOf } from './records.js';

/** A TLS file larger than this is not a certificate anyone meant. */
const MAX_FILE_BYTES = 1024 * 1024;

/** The files a stream names, by field. */
type TlsField = 'tlsCert' | 'tlsKey' | 'backendCa';

function refused(field: string, message: string): ConductorError {
  return new ConductorError(ErrorCode.InvalidInput, `${field}: ${message}`);
}

/** Folders whose files are the kernel's or devices, never an operator's certificate. */
const SPECIAL_ROOTS = ['/proc', '/sys', '/dev'];

function underSpecialRoot(path: string): boolean {
  return SPECIAL_ROOTS.some((root) => path === root || path.startsWith(`${root}/`));
}

/**
 * Reads one TLS file, bounded: the path is resolved (a link into /proc, /sys or /dev is refused),
 * opened without blocking (a FIFO or a device never holds the caller), the handle checked (a
 * regular file of 1 byte to 1 MiB) and at most 1 MiB + 1 byte read from it (a file that grows
 * past the bound, or that claims a size it does not have, is refused).
 */
export async function readTlsFile(field: TlsField, path: string, allowedDirs?: string[]): Promise<Buffer> {
  const cannot = (error: unknown) =>
    refused(field, `cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  if (underSpecialRoot(path)) throw refused(field, `${path} is under /proc, /sys or /dev: not a PEM file`);
  // A path outside the allowed folders is refused before it is looked at (nothing said of whether it exists).
  if (allowedDirs !== undefined && !(await isAllowed(path, allowedDirs)))
    throw notAllowed(field, path, undefined, allowedDirs);
  let real: string;
  try {
    real = await realpath(path);
  } catch (error) {
    throw cannot(error);
  }
  if (underSpecialRoot(real)) throw refused(field, `${path} is under /proc, /sys or /dev: not a PEM file`);
  if (allowedDirs !== undefined && !(await isAllowed(real, allowedDirs)))
    throw notAllowed(field, path, real, allowedDirs);
  let handle: FileHandle;
  try {
    handle = await open(real, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOCTTY);
  } catch (error) {
    throw cannot(error);
  }
  try {
    if (allowedDirs !== undefined) await checkAllowed(field, path, handle, allowedDirs);
    const info = await handle.stat();
    if (!info.isFile()) throw refused(field, `${path} is not a regular file`);
    if (info.size === 0) throw refused(field, `${path} is empty`);
    if (info.size > MAX_FILE_BYTES) throw refused(field, `${path} is larger than 1 MiB: not a PEM file`);
    const buffer = Buffer.alloc(MAX_FILE_BYTES + 1);
    let length = 0;
    while (length < buffer.length) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, length);
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    if (length > MAX_FILE_BYTES) throw refused(field, `${path} is larger than 1 MiB: not a PEM file`);
    if (length === 0) throw refused(field, `${path} is empty`);
    return Buffer.from(buffer.subarray(0, length));
  } catch (error) {
    if (error instanceof ConductorError) throw error;
    throw cannot(error);
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/** Whether `path` is `folder` or lies under it. */
function inside(path: string, folder: string): boolean {
  return folder === '/' || path === folder || path.startsWith(`${folder}/`);
}

/**
 * Refuses a file that does not lie in one of `allowedDirs` (CONDUCTOR_STREAM_TLS_DIRS). The file
 * judged is the one opened: its path as the kernel has it for the handle (/proc/self/fd), so a link
 * swapped between the resolution and the open does not lead out. A folder named through a link
 * counts as where the link leads too.
 */
async function checkAllowed(field: TlsField, path: string, handle: FileHandle, allowedDirs: string[]): Promise<void> {
  const opened = await readlink(`/proc/self/fd/${handle.fd}`).catch(() => undefined);
  if (opened !== undefined && (await isAllowed(opened, allowedDirs))) return;
  throw notAllowed(field, path, opened, allowedDirs);
}

/** Whether the resolved `path` lies in one of `allowedDirs` (as named, or where a link among them leads). */
async function isAllowed(path: string, allowedDirs: string[]): Promise<boolean> {
  const folders = [
    ...allowedDirs,
    ...(await Promise.all(allowedDirs.map((folder) => realpath(folder).catch(() => folder)))),
  ];
  return folders.some((folder) => inside(path, folder));
}

function notAllowed(
  field: TlsField,
  path: string,
  resolved: string | undefined,
  allowedDirs: string[],
): ConductorError {
  return refused(
    field,
    `${path}${resolved !== undefined && resolved !== path ? ` (${resolved})` : ''} is not inside the folders TLS files may come from (CONDUCTOR_STREAM_TLS_DIRS: ${allowedDirs.join(':')})`,
  );
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Every certificate of a PEM file, in order; refuses a file with none or with a broken one. */
function certificatesOf(field: TlsField, path: string, content: Buffer): X509Certificate[] {
  const blocks = content.toString('latin1').match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) throw refused(field, `${path} holds no PEM certificate`);
  return blocks.map((block, index) => {
    try {
      return new X509Certificate(block);
    } catch {
      throw refused(field, `${path}: certificate ${index + 1} is not a valid PEM certificate`);
    }
  });
}

function checkValidity(field: TlsField, path: string, certificate: X509Certificate, now: Date): CertificateFacts {
  const notBefore = new Date(certificate.validFrom);
  const notAfter = new Date(certificate.validTo);
  if (now.getTime() < notBefore.getTime())
    throw refused(
      field,
      `${path}: the certificate (${certificate.subject}) is not valid before ${notBefore.toISOString()}`,
    );
  if (now.getTime() > notAfter.getTime())
    throw refused(field, `${path}: the certificate (${certificate.subject}) expired at ${notAfter.toISOString()}`);
  return {
    field: field === 'backendCa' ? 'backendCa' : 'tlsCert',
    subject: certificate.subject.replace(/\n/g, ', '),
    notBefore: notBefore.toISOString(),
    notAfter: notAfter.toISOString(),
    fingerprint256: certificate.fingerprint256,
  };
}

function privateKeyOf(path: string, content: Buffer): KeyObject {
  const text = content.toString('latin1');
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) throw refused('tlsKey', `${path} holds no PEM private key`);
  if (/ENCRYPTED/.test(text)) throw refused('tlsKey', `${path} is encrypted: nginx needs the key without a passphrase`);
  try {
    return createPrivateKey(content);
  } catch {
    throw refused('tlsKey', `${path} is not a valid PEM private key`);
  }
}

/** The files read and checked: what the copies will hold. */
interface CheckedFiles {
  material: TlsMaterial;
  contents: Partial<Record<'cert' | 'key' | 'ca', Buffer>>;
}

/** The name of a set of copies: the digest of their contents. */
function contentsId(contents: CheckedFiles['contents']): string {
  const digest = createHash('sha256');
  for (const part of ['cert', 'key', 'ca'] as const) {
    digest.update(`${part}:${contents[part]?.length ?? -1}:`);
    if (contents[part] !== undefined) digest.update(contents[part]);
  }
  return digest.digest('hex').slice(0, 32);
}

/** Reads and checks the TLS files `spec` names; throws a 400 naming the field of the first problem. */
export async function checkTlsFiles(
  spec: StreamSpec,
  dir: string,
  now: Date,
  allowedDirs?: string[],
): Promise<CheckedFiles> {
  const contents: CheckedFiles['contents'] = {};
  const certificates: CertificateFacts[] = [];
  if (spec.tlsCert !== undefined && spec.tlsKey !== undefined) {
    const cert = await readTlsFile('tlsCert', spec.tlsCert, allowedDirs);
    const key = await readTlsFile('tlsKey', spec.tlsKey, allowedDirs);
    const chain = certificatesOf('tlsCert', spec.tlsCert, cert);
    const leaf = chain[0] as X509Certificate;
    certificates.push(checkValidity('tlsCert', spec.tlsCert, leaf, now));
    if (!leaf.checkPrivateKey(privateKeyOf(spec.tlsKey, key)))
      throw refused('tlsKey', `${spec.tlsKey} is not the key of the certificate in ${spec.tlsCert}`);
    contents.cert = cert;
    contents.key = key;
  }
  if (spec.backendCa !== undefined) {
    const ca = await readTlsFile('backendCa', spec.backendCa, allowedDirs);
    for (const certificate of certificatesOf('backendCa', spec.backendCa, ca))
      certificates.push(checkValidity('backendCa', spec.backendCa, certificate, now));
    contents.ca = ca;
  }
  const id = contentsId(contents);
  const material: TlsMaterial = { id, certificates };
  for (const part of ['cert', 'key', 'ca'] as const)
    if (contents[part] !== undefined) material[part] = join(dir, `${id}.${part}.pem`);
  return { material, contents };
}

/** Writes the checked copies (0600, renamed into place), once per content; answers the paths written. */
async function writeCopies(dir: string, checked: CheckedFiles): Promise<string[]> {
  const written: string[] = [];
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  for (const part of ['cert', 'key', 'ca'] as const) {
    const path = checked.material[part];
    const content = checked.contents[part];
    if (path === undefined || content === undefined) continue;
    const existing = await readFile(path).catch(() => undefined);
    if (existing?.equals(content)) {
      // In place already: made young again (the removal of unused copies spares it for its grace
      // time, while the change that found it is on its way) and kept to its owner.
      const at = new Date();
      await utimes(path, at, at);
      await chmod(path, 0o600);
      continue;
    }
    const temporary = `${path}.${process.pid}.tmp`;
    await writeFile(temporary, content, { mode: 0o600 });
    await rename(temporary, path);
    written.push(path);
  }
  return written;
}

/**
 * At start-up: whether the copies `record` is served from are in place and whole (their contents
 * still make the id they are named by). When one is missing or changed (a home restored without
 * stream-tls/, a copy deleted), they are made again from the operator's files, checked as at
 * create; the answer is then the material to serve (a new one when the files were renewed
 * meanwhile). Undefined when every copy is in place. Throws a ConductorError naming the copy and
 * the operator's file when the copies cannot be made again: the stream is then not served.
 */
export async function restoreCopies(
  record: StreamRecord,
  dir: string,
  now: Date,
  allowedDirs?: string[],
): Promise<TlsMaterial | undefined> {
  const material = record.tlsMaterial;
  if (material === undefined) return undefined;
  const contents: CheckedFiles['contents'] = {};
  let missing: string | undefined;
  for (const part of ['cert', 'key', 'ca'] as const) {
    const path = material[part];
    if (path === undefined) continue;
    // A store edited by hand (or restored from elsewhere) may name a file outside the copies'
    // folder, or one nginx's configuration cannot carry: never read or served, made again instead.
    if (resolve(dirname(path)) !== resolve(dir) || !isNginxSafePath(path)) {
      missing ??= `its TLS copy ${printable(path)} is not one of stream-tls/`;
      continue;
    }
    const content = await readFile(path).catch(() => undefined);
    if (content === undefined) missing ??= `its TLS copy stream-tls/${basename(path)} is missing`;
    else contents[part] = content;
  }
  if (missing === undefined && contentsId(contents) === material.id) return undefined;
  missing ??= 'its TLS copies in stream-tls/ do not hold what they were made from';
  const { tlsMaterial: _copies, ...spec } = record;
  let checked: CheckedFiles;
  try {
    checked = await checkTlsFiles(spec, dir, now, allowedDirs);
  } catch (error) {
    throw new ConductorError(
      ErrorCode.InvalidInput,
      `${missing} and cannot be made again: ${(error as Error).message}`,
    );
  }
  await writeCopies(dir, checked);
  return checked.material;
}

/** The folder of the copies under $CONDUCTOR_HOME. */
export function streamTlsDir(home: string): string {
  return join(home, 'stream-tls');
}

export interface StreamTlsOptions {
  dir: string;
  /** CONDUCTOR_STREAM_TLS_DIRS: the folders the operator's files must lie in; undefined: any. */
  allowedDirs?: string[] | undefined;
  now: () => Date;
}

/**
 * The copies of changes in flight. A change's copies are written before it is admitted; when it is
 * refused (a port taken, nginx refusing), those no stream uses and no other change in flight holds
 * are removed at once, so a refused change leaves no copy of a key behind. Writes and removals run
 * one after the other, so a removal never takes a copy another change has just found in place.
 */
export class TlsCopies {
  private readonly held = new Map<string, number>();
  /** The copies changes in flight wrote (those that were in place already are left alone). */
  private readonly fresh = new Map<string, Set<string>>();
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: StreamTlsOptions & { records: () => StreamRecord[] }) {}

  private serial<T>(task: () => Promise<T>): Promise<T> {
    const next = this.queue.then(task, task);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** `spec` with its files checked and, unless `dryRun`, copied and held until `release`. */
  async prepare(spec: StreamSpec, dryRun: boolean): Promise<StreamSpec> {
    if (spec.tlsMaterial !== undefined || (spec.tlsCert === undefined && spec.backendCa === undefined)) return spec;
    const checked = await checkTlsFiles(spec, this.options.dir, this.options.now(), this.options.allowedDirs);
    const prepared = { ...spec, tlsMaterial: checked.material };
    if (dryRun) return prepared;
    const { id } = checked.material;
    this.held.set(id, (this.held.get(id) ?? 0) + 1);
    try {
      const written = await this.serial(() => writeCopies(this.options.dir, checked));
      const fresh = this.fresh.get(id) ?? new Set<string>();
      for (const path of written) fresh.add(path);
      this.fresh.set(id, fresh);
    } catch (error) {
      await this.release([prepared], true);
      throw error;
    }
    return prepared;
  }

  /**
   * Lets go of the copies `prepare` held for `specs`; when the change was refused, removes those it
   * wrote that no stream uses and no change in flight holds.
   */
  async release(specs: StreamSpec[], refused: boolean): Promise<void> {
    const materials = specs.flatMap((spec) => (spec.tlsMaterial === undefined ? [] : [spec.tlsMaterial]));
    const gone: string[] = [];
    for (const { id } of materials) {
      const count = (this.held.get(id) ?? 0) - 1;
      if (count > 0) this.held.set(id, count);
      else {
        this.held.delete(id);
        if (refused) gone.push(...(this.fresh.get(id) ?? []));
        this.fresh.delete(id);
      }
    }
    if (gone.length === 0) return;
    await this.serial(async () => {
      const used = new Set(
        this.options
          .records()
          .flatMap((record) => [record.tlsMaterial?.cert, record.tlsMaterial?.key, record.tlsMaterial?.ca]),
      );
      const heldNow = new Set([...this.fresh.keys(), ...this.held.keys()]);
      for (const path of gone) {
        const id = path.slice(this.options.dir.length + 1).split('.')[0] ?? '';
        if (!used.has(path) && !heldNow.has(id)) await unlink(path).catch(() => undefined);
      }
    });
  }
}

/** The operator's files a stream names. */
function sourceFiles(spec: StreamSpec): string[] {
  return [spec.tlsCert, spec.tlsKey, spec.backendCa].filter((file): file is string => file !== undefined);
}

export interface RenewalOptions extends StreamTlsOptions {
  intervalMs: number;
  /** Every stream the daemon holds (a draining one's copies are kept, its files not looked at). */
  records: () => StreamRecord[];
  /**
   * Serves `spec` (with its new material) through the verified pipeline, only while the port still
   * holds `ifSpec` when the change is admitted (a change through the API meanwhile wins: CONFLICT).
   */
  put: (spec: StreamSpec, ifSpec: StreamRecord) => Promise<unknown>;
  /** Records a renewal served or refused (the audit log). */
  record: (port: number, result: 'ok' | 'refused', detail: string, message?: string) => void;
  log: Logger;
}

/** A copy no stream has used for this long may go (one just written may be on its way to a stream). */
const COPY_GRACE_MS = 10 * 60_000;

/** Picks up renewed TLS files of the streams: see the top of this file. */
export class TlsRenewals {
  private timer: NodeJS.Timeout | undefined;
  private busy = false;
  /** The signature of each port's files at the last look. */
  private readonly seen = new Map<number, string>();
  /** The last renewal of each port that could not be served, and why. */
  private readonly problems = new Map<number, string>();

  constructor(private readonly options: RenewalOptions) {}

  start(): void {
    this.timer = setInterval(() => {
      if (this.busy) return;
      this.busy = true;
      this.look()
        .catch((error: unknown) => this.options.log.warn("looking at the streams' TLS files failed", { error }))
        .finally(() => {
          this.busy = false;
        });
    }, this.options.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** Why the last change of a stream's TLS files was not served; undefined when it was. */
  problem(port: number): string | undefined {
    return this.problems.get(port);
  }

  /** One look at every stream's files, now. */
  async look(): Promise<void> {
    const all = this.options.records();
    const records = all.filter(
      (record) => usesTls(record) && record.tlsMaterial !== undefined && record.drainingUntil === undefined,
    );
    const ports = new Set(records.map((record) => record.port));
    for (const port of [...this.seen.keys()]) if (!ports.has(port)) this.seen.delete(port);
    for (const port of [...this.problems.keys()]) if (!ports.has(port)) this.problems.delete(port);
    for (const record of records) await this.lookAt(record);
    await this.removeUnused(all);
  }

  private async lookAt(record: StreamRecord): Promise<void> {
    const { log } = this.options;
    const signature = await filesSignature(sourceFiles(record));
    if (this.seen.get(record.port) === signature) return;
    this.seen.set(record.port, signature);
    const { tlsMaterial: current, ...spec } = record;
    let checked: CheckedFiles;
    try {
      checked = await checkTlsFiles(spec, this.options.dir, this.options.now(), this.options.allowedDirs);
    } catch (error) {
      this.refused(record.port, 'the TLS files of a stream changed but cannot serve', (error as Error).message);
      return;
    }
    if (checked.material.id === current?.id) {
      // The copies are written again if they went (a home restored without them): the retry of a
      // stream nginx could not take then finds them.
      await writeCopies(this.options.dir, checked);
      this.problems.delete(record.port);
      return;
    }
    await writeCopies(this.options.dir, checked);
    // A change through the API meanwhile wins: only the definition that was looked at is renewed.
    const latest = this.options.records().find((other) => other.port === record.port);
    if (latest === undefined || !sameSpec(latest, record)) {
      this.seen.delete(record.port);
      return;
    }
    try {
      await this.options.put({ ...specOf(record), tlsMaterial: checked.material }, record);
    } catch (error) {
      if (error instanceof ConductorError && error.code === ErrorCode.Conflict) {
        // Changed through the API between the look and the change: the next look judges the new one.
        this.seen.delete(record.port);
        return;
      }
      // A refusal may be passing (nginx away, another change of the same reload failing): the next
      // look tries again, and says so only when the reason changes.
      this.seen.delete(record.port);
      this.refused(record.port, 'a renewed TLS file of a stream was refused by nginx', (error as Error).message);
      return;
    }
    this.problems.delete(record.port);
    const leaf = checked.material.certificates[0];
    log.info('the TLS files of a stream changed; nginx serves the new ones', {
      port: record.port,
      fingerprint256: leaf?.fingerprint256,
      notAfter: leaf?.notAfter,
    });
    this.options.record(
      record.port,
      'ok',
      `TLS files changed: now ${checked.material.certificates.map((facts) => `${facts.field} until ${facts.notAfter}`).join(', ')}`,
    );
  }

  /** Reports a renewal that could not be served (log, audit), once per reason; the certificate in use stays. */
  private refused(port: number, what: string, message: string): void {
    if (this.problems.get(port) === message) return;
    this.problems.set(port, message);
    this.options.log.warn(`${what}; the certificate in use is kept`, { port, error: message });
    this.options.record(port, 'refused', 'TLS files changed', message);
  }

  /** Removes copies no stream uses any more (past a grace time). */
  private async removeUnused(records: StreamRecord[]): Promise<void> {
    const used = new Set(
      records.flatMap((record) => [record.tlsMaterial?.cert, record.tlsMaterial?.key, record.tlsMaterial?.ca]),
    );
    let names: string[];
    try {
      names = await readdir(this.options.dir);
    } catch {
      return;
    }
    const now = this.options.now().getTime();
    for (const name of names) {
      const path = join(this.options.dir, name);
      if (used.has(path)) continue;
      const info = await stat(path).catch(() => undefined);
      if (info !== undefined && now - info.mtimeMs > COPY_GRACE_MS) await unlink(path).catch(() => undefined);
    }
  }
}
