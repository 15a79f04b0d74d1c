/** The quiet parts of a fake nginx controller, shared by the pipeline's unit tests: a master that runs and asks nothing. */
import type { NginxStatus } from '@stream-conductor/shared';
import type { TestResult } from '../src/nginx/binary.js';
import type { NginxController, ReloadOutcome } from '../src/nginx/process/controller.js';

export abstract class QuietNginx implements NginxController {
  abstract readonly mode: 'managed' | 'external';
  abstract test(): Promise<TestResult>;
  abstract reload(options?: { urgent?: boolean }): Promise<ReloadOutcome>;

  async isRunning(): Promise<boolean> {
    return true;
  }

  async clearLeftovers(): Promise<void> {}

  start(): Promise<ReloadOutcome> {
    return this.reload();
  }

  async stop(): Promise<void> {}

  async reopenLogs(): Promise<void> {}

  async oldProcesses(previous: number[]): Promise<number[]> {
    return previous;
  }

  async auditProcesses(): Promise<undefined> {
    return undefined;
  }

  status(): NginxStatus {
    return { state: 'running', restarts: 0 };
  }

  onUnexpectedExit(): void {}
}
