/**
 * Cutting the established sessions of a port. nginx keeps the sessions of a removed stream alive
 * on its old workers until they end; `ss -K` (iproute2, with the kernel's SOCK_DESTROY) closes
 * them. Only TCP sessions whose local port is `port` are touched.
 */
import { execa } from 'execa';

/** Established TCP sessions whose local port is `port`. */
export async function establishedSessions(port: number): Promise<number> {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`invalid port ${String(port)}`);
  return established(port);
}

async function established(port: number): Promise<number> {
  const result = await execa('ss', ['-H', '-t', '-n', 'state', 'established', `( sport = :${port} )`], {
    reject: false,
  });
  if (result.exitCode !== 0) throw new Error(`ss failed: ${result.stderr || result.shortMessage}`);
  return result.stdout.split('\n').filter((line) => line.trim() !== '').length;
}

/** Closes every established TCP session on local port `port`; returns how many there were. */
export async function killSessions(port: number): Promise<number> {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`invalid port ${String(port)}`);
  const before = await established(port);
  if (before === 0) return 0;
  const result = await execa('ss', ['-K', '-H', '-t', '-n', 'state', 'established', `( sport = :${port} )`], {
    reject: false,
  });
  if (result.exitCode !== 0) throw new Error(`ss -K failed: ${result.stderr || result.shortMessage}`);
  const left = await established(port);
  if (left > 0) throw new Error(`${left} session(s) survived (does the kernel allow SOCK_DESTROY?)`);
  return before;
}
