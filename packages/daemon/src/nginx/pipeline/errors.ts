/** The refusals the pipeline makes of low-level failures: a full disk, no descriptors left, a bug. */
import { ConductorError, ErrorCode } from '@stream-conductor/shared';

/** The daemon out of descriptors (its own or the system's), as a refusal that says so; undefined for other errors. */
export function exhaustionError(error: unknown): ConductorError | undefined {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code !== 'EMFILE' && code !== 'ENFILE') return undefined;
  return new ConductorError(
    ErrorCode.StorageFailed,
    `the daemon is out of file descriptors (too many open files, ${code}): nothing was changed`,
    {
      hint: "raise the daemon's descriptor limit (ulimit -n, systemd's LimitNOFILE=) or close connections, and try again",
      cause: error,
    },
  );
}

/** A write of the stream files or the store that failed, as the refusal the client gets. */
export function storageError(error: unknown): ConductorError {
  const exhausted = exhaustionError(error);
  if (exhausted) return exhausted;
  const code = (error as NodeJS.ErrnoException).code;
  const reason =
    code === 'ENOSPC'
      ? 'no space left on the device'
      : code === 'EROFS'
        ? 'the file system is read-only'
        : code === 'EACCES' || code === 'EPERM'
          ? 'permission denied'
          : (code ?? (error as Error).message);
  return new ConductorError(ErrorCode.StorageFailed, `the change could not be written: ${reason}`, {
    hint: 'nothing was changed; free space or fix the folder permissions and try again',
    cause: error,
  });
}

/** Any error as a ConductorError: the ones the pipeline raised as they are, the rest as internal. */
export function internal(error: unknown): ConductorError {
  return error instanceof ConductorError
    ? error
    : new ConductorError(ErrorCode.Internal, 'internal error', { cause: error });
}
