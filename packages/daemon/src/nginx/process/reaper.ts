/**
 * The reaper a managed nginx runs under when changes are handed to new masters: a small perl
 * process (perl-base is essential on Debian) that makes itself the subreaper of what it starts.
 * nginx ignores SIGUSR2 in a master whose parent is the process that started it, so the master
 * is started daemonized below the reaper: its parent is then the reaper, and the processes a
 * handoff orphans (the killed master, its workers once their sessions end) are reaped by it. The
 * reaper exits by itself once no nginx process is left below it.
 */
import { childPids, commandLine, NGINX_REAPER_TITLE } from '../../sys/processes.js';

/** prctl(2)'s system call number, by Node's name for the processor. */
const PRCTL: Partial<Record<string, number>> = {
  x64: 157,
  arm64: 167,
  riscv64: 167,
  arm: 172,
  ia32: 172,
  ppc64: 171,
  s390x: 172,
};

/**
 * The reaper: PR_SET_CHILD_SUBREAPER (36), then it starts nginx and reaps every process that ends
 * below it until none is left. Exit codes 70-72: it could not set itself up.
 */
const REAPER = [
  'my $prctl = shift @ARGV;',
  `$0 = '${NGINX_REAPER_TITLE}';`,
  'if (syscall($prctl + 0, 36, 1, 0, 0, 0) != 0) { print STDERR "reaper: prctl: $!\n"; exit 70; }',
  'my $child = fork();',
  'if (!defined $child) { print STDERR "reaper: fork: $!\n"; exit 71; }',
  'if ($child == 0) { exec { $ARGV[0] } @ARGV; print STDERR "reaper: exec $ARGV[0]: $!\n"; exit 72; }',
  'my $code = 0;',
  'while ((my $pid = waitpid(-1, 0)) > 0) { $code = 72 if $pid == $child && ($? >> 8) == 72; }',
  'exit $code;',
].join(' ');

/** The reaper's exit code when the kernel refused it as a subreaper. */
export const REAPER_REFUSED = 70;
/** The reaper's exit codes when it could not fork or start nginx. */
export const REAPER_FAILED = [71, 72];

/** Why nginx cannot run under the reaper here, before trying; undefined when it may. */
export function reaperUnsupported(nginxBin: string): string | undefined {
  // nginx starts its new master from the path it was started with, without a PATH search.
  if (!nginxBin.startsWith('/')) return `NGINX_BIN ${nginxBin} is not an absolute path`;
  if (PRCTL[process.arch] === undefined) return `no subreaper on this processor (${process.arch})`;
  return undefined;
}

/** The command that starts `nginxBin` with `nginxArgs` below a reaper. */
export function reaperCommand(nginxBin: string, nginxArgs: string[]): { bin: string; args: string[] } {
  return { bin: 'perl', args: ['-e', REAPER, String(PRCTL[process.arch]), nginxBin, ...nginxArgs] };
}

/** The nginx master the reaper `reaper` started, once it runs (daemonized, the reaper's child). */
export async function masterBelow(reaper: number): Promise<number | undefined> {
  for (const child of await childPids(reaper)) {
    if ((await commandLine(child))?.startsWith('nginx: master process')) return child;
  }
  return undefined;
}
