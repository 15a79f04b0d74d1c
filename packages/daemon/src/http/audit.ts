/** Recording changes made through the API in the audit log: who, from where, what, how it ended. */
import type { Request, Response } from 'express';
import { type AuditEvent, ConductorError } from '@stream-conductor/shared';
import type { Observatory } from '../observe/observatory.js';

export type Audited = <T>(
  req: Request,
  res: Response,
  event: Pick<AuditEvent, 'action' | 'ports'> & { detail?: string },
  change: () => Promise<T>,
) => Promise<T>;

/** Runs `change` and records its outcome; what it throws is thrown on unchanged. */
export function auditor(observatory: Observatory | undefined): Audited {
  return async (req, res, event, change) => {
    const base = { actor: String(res.locals.actor ?? 'anonymous'), remote: req.socket.remoteAddress ?? '', ...event };
    try {
      const result = await change();
      observatory?.record({ ...base, result: 'ok' });
      return result;
    } catch (error) {
      if (error instanceof ConductorError) observatory?.record({ ...base, result: 'refused', code: error.code, message: error.message });
      throw error;
    }
  };
}
