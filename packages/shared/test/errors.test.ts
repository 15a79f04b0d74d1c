import { describe, expect, it } from '@jest/globals';
import { ConductorError, ErrorCode, httpStatusFor, StartupError } from '../src/index.js';

describe('ConductorError', () => {
  it('round-trips through its JSON body', () => {
    const error = new ConductorError(ErrorCode.PortInUse, 'port 9000 is held by another process', {
      hint: 'pick another',
    });
    const back = ConductorError.fromBody(JSON.parse(JSON.stringify(error.toBody())));
    expect(back).toBeInstanceOf(ConductorError);
    expect(back?.code).toBe('PORT_IN_USE');
    expect(back?.message).toBe('port 9000 is held by another process');
    expect(back?.hint).toBe('pick another');
  });

  it('leaves out an absent hint', () => {
    expect(new ConductorError(ErrorCode.NotFound, 'gone').toBody()).toEqual({
      error: { code: 'NOT_FOUND', message: 'gone' },
    });
  });

  it.each([
    null,
    'text',
    {},
    { error: 'x' },
    { error: { code: 'NOPE', message: 'x' } },
    { error: { code: 'NOT_FOUND' } },
  ])('does not take %p for an error body', (body) => {
    expect(ConductorError.fromBody(body)).toBeUndefined();
  });

  it('maps codes to HTTP statuses: refusals are 4xx, only server trouble is 5xx', () => {
    expect(httpStatusFor(ErrorCode.InvalidInput)).toBe(400);
    expect(httpStatusFor(ErrorCode.PortOutOfRange)).toBe(400);
    expect(httpStatusFor(ErrorCode.Unauthorized)).toBe(401);
    expect(httpStatusFor(ErrorCode.NotFound)).toBe(404);
    expect(httpStatusFor(ErrorCode.StreamExists)).toBe(409);
    expect(httpStatusFor(ErrorCode.PortInUse)).toBe(409);
    expect(httpStatusFor(ErrorCode.NginxRejected)).toBe(422);
    expect(httpStatusFor(ErrorCode.NginxUnavailable)).toBe(503);
  });
});

describe('StartupError', () => {
  it('is a ConductorError, BadConfig unless told', () => {
    const error = new StartupError('BIND_PORT (--bind-port): no');
    expect(error).toBeInstanceOf(ConductorError);
    expect(error.code).toBe(ErrorCode.BadConfig);
    expect(new StartupError('x', { code: ErrorCode.AlreadyRunning }).code).toBe('ALREADY_RUNNING');
  });

  it('prints as one line: the message, then the hint', () => {
    expect(new StartupError('refused').line()).toBe('refused');
    expect(new StartupError('refused', { hint: 'do this' }).line()).toBe('refused; do this');
  });

  it('lets a subclass name itself', () => {
    class LockError extends StartupError {
      override readonly name = 'LockError';
    }
    expect(new LockError('held').name).toBe('LockError');
    expect(new LockError('held')).toBeInstanceOf(StartupError);
  });
});
