/**
 * The audit of one nginx master: the kernel's listening sockets and the processes that hold them,
 * compared with the streams the daemon lists for that master. Run between changes, every few
 * seconds. It finds what a signal cannot prove: a port the master serves that no definition has
 * (extra), a definition whose port nothing of the master holds (missing), and processes of ours
 * outside the master's own generation that still hold listening sockets (strays: an orphaned or
 * stuck worker, the rest of a handoff, a second master). Strays get SIGQUIT, then SIGKILL if they
 * are still there at the next audit. What it finds goes to status, metrics and the audit log.
 */
import type { NginxAudit } from '@stream-conductor/shared';
import { signal } from '../../sys/processes.js';
import { type KernelSocket, kernelSockets, socketHolders, socketInodesOf } from '../../sys/sockets.js';

export interface AuditSubject {
  /**
   * The master that serves now, how many workers it has taking connections, and its processes of
   * ours outside its generation; undefined when no master runs.
   */
  processes(): Promise<{ master: number; workers: number; others: number[] } | undefined>;
  /** `protocol:port` of every stream the daemon lists as live on this master. */
  expected(): Set<string>;
}

export interface AuditFindings {
  audit: NginxAudit;
  /** The strays signalled in this round, and with which signal. */
  signalled: Array<{ pid: number; signal: 'SIGQUIT' | 'SIGKILL'; ports: number[] }>;
}

const key = (socket: KernelSocket): string => `${socket.protocol}:${socket.port}`;
const portOf = (keyText: string): number => Number(keyText.slice(keyText.indexOf(':') + 1));

export class NginxAuditor {
  /** Strays seen at the last audit (they got SIGQUIT then). */
  private seen = new Set<number>();
  /** Strays found and told to go since the daemon started. */
  private straysEnded = 0;

  constructor(private readonly subject: AuditSubject) {}

  async run(): Promise<AuditFindings | undefined> {
    const processes = await this.subject.processes();
    if (processes === undefined) return undefined;
    const sockets = kernelSockets();
    const byInode = new Map(sockets.map((socket) => [socket.inode, socket]));
    const held = socketInodesOf(processes.master);
    // A master whose descriptors may not be read cannot be audited: say nothing rather than guess.
    if (held === undefined) return undefined;
    const served = new Set(
      held.flatMap((inode) => {
        const socket = byInode.get(inode);
        return socket ? [key(socket)] : [];
      }),
    );
    const expected = this.subject.expected();
    const missing = [...expected].filter((one) => !served.has(one));
    const extra = [...served].filter((one) => !expected.has(one));
    const strays = socketHolders(processes.others, new Set(byInode.keys()));
    const signalled: AuditFindings['signalled'] = [];
    for (const [pid, inodes] of strays) {
      const ports = [...new Set(inodes.flatMap((inode) => byInode.get(inode)?.port ?? []))].sort((a, b) => a - b);
      const name = this.seen.has(pid) ? 'SIGKILL' : 'SIGQUIT';
      signal(pid, name);
      signalled.push({ pid, signal: name, ports });
      if (name === 'SIGQUIT') this.straysEnded += 1;
    }
    this.seen = new Set(strays.keys());
    const ports = (list: string[]): number[] => [...new Set(list.map(portOf))].sort((a, b) => a - b);
    const audit: NginxAudit = {
      at: new Date().toISOString(),
      inLine:
        missing.length === 0 &&
        extra.length === 0 &&
        strays.size === 0 &&
        (processes.workers > 0 || expected.size === 0),
      missing: ports(missing),
      extra: ports(extra),
      workers: processes.workers,
      strays: strays.size,
      straysEnded: this.straysEnded,
    };
    return { audit, signalled };
  }
}
