// @ts-check
/**
 * Benchmark 7 (fleet mode): three daemons on one machine, each with its own nginx on its own
 * loopback address (127.0.0.2, .3, .4), sharing one etcd member. A client creates streams one
 * after another through the first host; for each, the time until the stream accepts connections
 * on every host, from the request and from the first host's answer (the change accepted, live
 * there). Reported: median and p99.
 */
import { connect } from 'node:net';
import { call, echoBackend, freeBlock, median, ms, now, percentile, sleep, startDaemon, startEtcd } from './lib.mjs';

/** Resolves once `host:port` accepts a connection, polling every millisecond. @param {string} host @param {number} port */
async function untilOpen(host, port) {
  for (;;) {
    const open = await new Promise((resolve) => {
      const socket = connect({ host, port });
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return now();
    await sleep(1);
  }
}

export async function run(count = 100) {
  const etcd = await startEtcd();
  const backend = await echoBackend();
  const base = await freeBlock(count + 3);
  /** @type {Array<Awaited<ReturnType<typeof startDaemon>>>} */
  const hosts = [];
  try {
    for (let i = 0; i < 3; i += 1) {
      hosts.push(
        await startDaemon({
          rangeSize: count,
          base,
          apiPort: base + count + i,
          env: {
            CONDUCTOR_STORE: `etcd://${etcd.endpoint}`,
            CONDUCTOR_ETCD_PREFIX: `/bench-${base}/`,
            CONDUCTOR_HOST_ID: `host-${i}`,
            CONDUCTOR_LISTEN_ADDRESS: `127.0.0.${i + 2}`,
            CONDUCTOR_NGINX_INSTANCES: '2',
          },
        }),
      );
    }
    const first = hosts[0];
    if (!first) throw new Error('no host');
    const fromRequest = [];
    const fromAnswer = [];
    const answers = [];
    for (let i = 0; i < count; i += 1) {
      const port = base + i;
      const started = now();
      const everywhere = Promise.all(['127.0.0.2', '127.0.0.3', '127.0.0.4'].map((host) => untilOpen(host, port)));
      const answer = await call('POST', `${first.url}/v1/streams`, { port, backend: `127.0.0.1:${backend.port}` });
      const answered = now();
      if (answer.status !== 201) throw new Error(`create ${port}: ${JSON.stringify(answer.json)}`);
      const live = Math.max(...(await everywhere));
      answers.push(answered - started);
      fromRequest.push(live - started);
      fromAnswer.push(Math.max(0, live - answered));
    }
    return {
      title: `7. Fleet: ${count} creates through one of three hosts, until live on all three`,
      target: 'recorded, no target',
      holds: true,
      columns: ['measure', 'median', 'p99'],
      rows: [
        ['answer of the first host (live there)', ms(median(answers)), ms(percentile(answers, 99))],
        ['request to live on all three hosts', ms(median(fromRequest)), ms(percentile(fromRequest, 99))],
        ['answer to live on all three hosts', ms(median(fromAnswer)), ms(percentile(fromAnswer, 99))],
      ],
      summary: 'one etcd member on loopback; each host runs 2 nginx masters; one client, one create at a time',
    };
  } finally {
    for (const host of hosts) await host.stop();
    await backend.close();
    await etcd.stop();
  }
}
