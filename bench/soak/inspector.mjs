// @ts-check
/** The daemon's V8, through its inspector: a full GC before measuring memory. */
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { get } from './api.mjs';
import { rssKiB } from './host.mjs';
import { sleep } from './util.mjs';

/** @typedef {import('./daemon.mjs').Daemon} Daemon */

/**
 * Just enough of a WebSocket client (RFC 6455: masked text frames out, unmasked frames in) to
 * speak the inspector protocol; Node 20 has no WebSocket client of its own.
 */
export class Inspector {
  /** @param {import('node:net').Socket} socket */
  constructor(socket) {
    this.socket = socket;
    this.nextId = 1;
    /** @type {Map<number, { done: (value: Record<string, unknown>) => void, fail: (error: Error) => void }>} */
    this.pending = new Map();
    this.buffer = Buffer.alloc(0);
    /** @type {Buffer[]} */
    this.fragments = [];
    socket.on('data', (chunk) => this.onData(chunk));
    const failAll = (/** @type {Error} */ error) => {
      for (const { fail } of this.pending.values()) fail(error);
      this.pending.clear();
    };
    socket.on('error', failAll);
    socket.on('close', () => failAll(new Error('inspector connection closed')));
  }

  /** @param {number} port */
  static async connect(port) {
    const list = await get(undefined, port, '/json/list', 5000);
    const target = Array.isArray(list.json)
      ? /** @type {{ webSocketDebuggerUrl?: string }} */ (list.json[0] ?? {})
      : {};
    if (!target.webSocketDebuggerUrl)
      throw new Error(`no inspector target on port ${port}: ${list.error ?? list.text.slice(0, 200)}`);
    const path = new URL(target.webSocketDebuggerUrl).pathname;
    const socket = connect({ port, host: '127.0.0.1' });
    const key = randomBytes(16).toString('base64');
    const rest = await new Promise(
      /** @param {(rest: Buffer) => void} done @param {(error: Error) => void} fail */
      (done, fail) => {
        let head = Buffer.alloc(0);
        const timer = setTimeout(() => fail(new Error('inspector handshake timed out')), 5000);
        /** @param {Buffer} chunk */
        const onData = (chunk) => {
          head = Buffer.concat([head, chunk]);
          const end = head.indexOf('\r\n\r\n');
          if (end < 0) return;
          clearTimeout(timer);
          socket.off('data', onData);
          const status = head.subarray(0, end).toString('latin1').split('\r\n')[0] ?? '';
          if (!/^HTTP\/1\.1 101/.test(status)) fail(new Error(`inspector refused the upgrade: ${status}`));
          else done(head.subarray(end + 4));
        };
        socket.on('data', onData);
        socket.once('error', (error) => {
          clearTimeout(timer);
          fail(error);
        });
        socket.once('connect', () =>
          socket.write(
            `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
          ),
        );
      },
    );
    const inspector = new Inspector(socket);
    if (rest.length > 0) inspector.onData(rest);
    return inspector;
  }

  /** @param {Buffer} chunk */
  onData(chunk) {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    for (;;) {
      if (this.buffer.length < 2) return;
      const first = /** @type {number} */ (this.buffer[0]);
      const second = /** @type {number} */ (this.buffer[1]);
      let length = second & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (this.buffer.length < 4) return;
        length = this.buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (this.buffer.length < 10) return;
        length = Number(this.buffer.readBigUInt64BE(2));
        offset = 10;
      }
      if (second & 0x80) offset += 4; // a server never masks; skip the key if one did
      if (this.buffer.length < offset + length) return;
      const payload = this.buffer.subarray(offset, offset + length);
      this.buffer = this.buffer.subarray(offset + length);
      const opcode = first & 0x0f;
      if (opcode === 0x8) {
        this.socket.destroy();
        return;
      }
      if (opcode !== 0x0 && opcode !== 0x1) continue; // ping/pong/binary: not used by the inspector
      this.fragments.push(Buffer.from(payload));
      if ((first & 0x80) === 0) continue;
      const text = Buffer.concat(this.fragments).toString('utf8');
      this.fragments = [];
      /** @type {{ id?: number, result?: Record<string, unknown>, error?: { message?: string } }} */
      let message;
      try {
        message = JSON.parse(text);
      } catch {
        continue;
      }
      const waiting = message.id === undefined ? undefined : this.pending.get(message.id);
      if (!waiting || message.id === undefined) continue;
      this.pending.delete(message.id);
      if (message.error)
        waiting.fail(new Error(`inspector: ${message.error.message ?? JSON.stringify(message.error)}`));
      else waiting.done(message.result ?? {});
    }
  }

  /**
   * @param {string} method
   * @param {Record<string, unknown>} [params]
   * @returns {Promise<Record<string, unknown>>}
   */
  call(method, params = {}) {
    const id = this.nextId++;
    const payload = Buffer.from(JSON.stringify({ id, method, params }), 'utf8');
    const mask = randomBytes(4);
    const header =
      payload.length < 126
        ? Buffer.from([0x81, 0x80 | payload.length])
        : payload.length < 65_536
          ? Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 0xff])
          : (() => {
              const big = Buffer.alloc(10);
              big[0] = 0x81;
              big[1] = 0x80 | 127;
              big.writeBigUInt64BE(BigInt(payload.length), 2);
              return big;
            })();
    for (let i = 0; i < payload.length; i += 1)
      payload[i] = /** @type {number} */ (payload[i]) ^ /** @type {number} */ (mask[i % 4]);
    return new Promise((done, fail) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        fail(new Error(`inspector: ${method} timed out`));
      }, 30_000);
      this.pending.set(id, {
        done: (value) => {
          clearTimeout(timer);
          done(value);
        },
        fail: (error) => {
          clearTimeout(timer);
          fail(error);
        },
      });
      this.socket.write(Buffer.concat([header, mask, payload]));
    });
  }

  close() {
    this.socket.destroy();
  }
}

/**
 * The daemon's memory. With an inspector port, V8 first runs a full, memory-reducing GC
 * (HeapProfiler.collectGarbage, i.e. a low-memory notification), so that RSS reflects what the
 * daemon holds rather than when V8 last collected; JS heap used is read after it.
 * @param {Daemon} daemon
 * @returns {Promise<{ rssKiB: number, heapUsedKiB: number }>}
 */
export async function daemonMemory(daemon) {
  let heapUsedKiB = NaN;
  if (daemon.inspectPort !== undefined) {
    const inspector = await Inspector.connect(daemon.inspectPort);
    try {
      await inspector.call('HeapProfiler.collectGarbage');
      const usage = await inspector.call('Runtime.getHeapUsage');
      heapUsedKiB = Number(usage.usedSize) / 1024;
    } finally {
      inspector.close();
    }
    await sleep(300);
  }
  return { rssKiB: await rssKiB(daemon.pid), heapUsedKiB };
}
