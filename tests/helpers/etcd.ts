/**
 * Real etcd members (Debian's etcd-server) for the fleet tests: one or three, on loopback ports,
 * each with its data in the test's temporary folder; killed and started again at will.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { freePortBlock } from './ports.js';
import { sleep } from './wait.js';

interface Member {
  name: string;
  client: number;
  peer: number;
  dataDir: string;
  child: ChildProcess | undefined;
  log: string;
}

export class EtcdCluster {
  private constructor(
    readonly members: Member[],
    private readonly token: string,
  ) {}

  /** Starts `size` members and waits until the cluster answers. */
  static async start(dir: string, size = 1): Promise<EtcdCluster> {
    const base = await freePortBlock(2 * size);
    const members: Member[] = Array.from({ length: size }, (_, i) => ({
      name: `m${i}`,
      client: base + 2 * i,
      peer: base + 2 * i + 1,
      dataDir: join(dir, `etcd-m${i}`),
      child: undefined,
      log: '',
    }));
    const cluster = new EtcdCluster(members, `sc-${process.pid}-${base}`);
    for (const member of members) cluster.spawn(member, 'new');
    await cluster.waitHealthy();
    return cluster;
  }

  /** `host:port` of every member, as CONDUCTOR_STORE=etcd://... takes them. */
  get endpoints(): string {
    return this.members.map((member) => `127.0.0.1:${member.client}`).join(',');
  }

  private spawn(member: Member, state: 'new' | 'existing'): void {
    const initial = this.members.map((one) => `${one.name}=http://127.0.0.1:${one.peer}`).join(',');
    const child = spawn(
      'etcd',
      [
        '--name',
        member.name,
        '--data-dir',
        member.dataDir,
        '--listen-client-urls',
        `http://127.0.0.1:${member.client}`,
        '--advertise-client-urls',
        `http://127.0.0.1:${member.client}`,
        '--listen-peer-urls',
        `http://127.0.0.1:${member.peer}`,
        '--initial-advertise-peer-urls',
        `http://127.0.0.1:${member.peer}`,
        '--initial-cluster',
        initial,
        '--initial-cluster-state',
        state,
        '--initial-cluster-token',
        this.token,
        // Quick elections, so that a lost leader is replaced within a second.
        '--heartbeat-interval',
        '50',
        '--election-timeout',
        '500',
        '--logger',
        'zap',
        '--log-level',
        'error',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    member.log = '';
    child.stdout?.on('data', (chunk: Buffer) => (member.log += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (member.log += chunk.toString()));
    member.child = child;
  }

  private async healthy(member: Member): Promise<boolean> {
    try {
      const answer = await fetch(`http://127.0.0.1:${member.client}/health`, { signal: AbortSignal.timeout(1000) });
      return ((await answer.json()) as { health?: string }).health === 'true';
    } catch {
      return false;
    }
  }

  /** Waits until every running member answers healthy (a quorum and a leader). */
  async waitHealthy(timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const running = this.members.filter(
        (member) => member.child && member.child.exitCode === null && member.child.signalCode === null,
      );
      const answers = await Promise.all(running.map((member) => this.healthy(member)));
      if (running.length > 0 && answers.every(Boolean)) return;
      if (Date.now() > deadline)
        throw new Error(`etcd not healthy:\n${this.members.map((member) => member.log).join('\n')}`);
      await sleep(100);
    }
  }

  /** The member that leads now. */
  async leader(): Promise<Member> {
    for (const member of this.members) {
      if (!member.child || member.child.exitCode !== null || member.child.signalCode !== null) continue;
      try {
        const answer = await fetch(`http://127.0.0.1:${member.client}/v3/maintenance/status`, {
          method: 'POST',
          body: '{}',
          signal: AbortSignal.timeout(1000),
        });
        const status = (await answer.json()) as { header: { member_id: string }; leader: string };
        if (status.leader === status.header.member_id) return member;
      } catch {
        // not answering: ask the next
      }
    }
    throw new Error('no etcd member leads');
  }

  async kill(member: Member, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = member.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill(signal);
    await exited;
  }

  /** Freezes a member (SIGSTOP): it holds its connections and answers nothing. */
  pause(member: Member): void {
    member.child?.kill('SIGSTOP');
  }

  resume(member: Member): void {
    member.child?.kill('SIGCONT');
  }

  /** etcd's JSON gateway of a running member: `call('/v3/kv/put', {...})`. */
  async call(path: string, body: unknown): Promise<Record<string, unknown>> {
    for (const member of this.members) {
      if (!member.child || member.child.exitCode !== null || member.child.signalCode !== null) continue;
      const answer = await fetch(`http://127.0.0.1:${member.client}${path}`, {
        method: 'POST',
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(3000),
      });
      return (await answer.json()) as Record<string, unknown>;
    }
    throw new Error('no etcd member runs');
  }

  /** Writes a raw key (as another program would). */
  async put(key: string, value: string): Promise<void> {
    await this.call('/v3/kv/put', {
      key: Buffer.from(key).toString('base64'),
      value: Buffer.from(value).toString('base64'),
    });
  }

  async leaseCount(): Promise<number> {
    const answer = await this.call('/v3/lease/leases', {});
    return ((answer.leases as unknown[] | undefined) ?? []).length;
  }

  /** Starts a stopped member again on its data. */
  async restart(member: Member): Promise<void> {
    this.spawn(member, 'existing');
    await this.waitHealthy();
  }

  async stop(): Promise<void> {
    for (const member of this.members) await this.kill(member, 'SIGTERM');
  }
}
