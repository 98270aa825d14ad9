/**
 * A media worker that dies before it is ready (a start-up error) is retried with a backoff of
 * 1 s doubling, not in a tight loop; meanwhile the SFU serves on its other workers, and once the
 * worker starts it takes joins again.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestSfu, type TestSfu } from '../support/sfu-harness.ts';
import { joinRaw, type RawClient } from '../support/raw-signal.ts';
import { captureLog } from '../support/log-capture.ts';
import { waitFor } from '../support/wait.ts';

const FAIL_HOOKS = new URL('../support/worker-hooks/fail-start.ts', import.meta.url).href;

describe('sfu media worker that fails to start', () => {
  let sfu: TestSfu | undefined;
  const clients: RawClient[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'sfu-worker-start-'));
  afterEach(async () => {
    for (const c of clients.splice(0)) c.ws.terminate();
    await sfu?.stop();
    sfu = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  /** The worker `identity` is placed on. */
  const joinAs = async (identity: string) => {
    const c = await joinRaw(sfu!, identity, 'start-room');
    clients.push(c);
    return sfu!.sfu.mediaWorkers!.workerOf(c.sid);
  };

  it('is retried after 1 s, then 2 s, while the other worker serves, and takes joins once it runs', async () => {
    const file = join(dir, 'starts');
    const log = captureLog('info');
    sfu = await startTestSfu({ workers: 2, workerPlacement: 'spread', logger: log.logger, workerHooks: { module: FAIL_HOOKS, data: { file, worker: 1, failures: 2 } } });
    const pool = sfu.sfu.mediaWorkers!;

    // While worker 1 is down, joins go to worker 0.
    expect(await joinAs('alice')).toBe(0);
    await waitFor('worker 1 started a third time', () => pool.workers()[1]!.restarts === 2 && readFileSync(file, 'utf8').split('\n').filter((l) => l.startsWith('1 ')).length === 3, {
      timeoutMs: 15_000,
    });
    await pool.ready();
    const failed = log.lines.filter((l) => l.msg === 'media worker failed to start');
    expect(failed.map((l) => [l.worker, l.tries, l.retryInMs])).toEqual([
      [1, 1, 1000],
      [1, 2, 2000],
    ]);
    const starts = readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('1 '))
      .map((l) => Number(l.split(' ')[1]));
    expect(starts[1]! - starts[0]!).toBeGreaterThanOrEqual(1000);
    expect(starts[2]! - starts[1]!).toBeGreaterThanOrEqual(2000);

    // Worker 1 runs now: the least-loaded one, it takes the next join.
    expect(await joinAs('bob')).toBe(1);
  });
});
