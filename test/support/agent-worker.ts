/**
 * Runs the real @livekit/agents worker of examples/tone-agent as a child process against a
 * test SFU (its own package, so it resolves its own @livekit/rtc-node 0.13). The worker and the
 * job processes it forks share a process group; `kill()` ends the whole group with SIGKILL (a
 * crashed host), `stop()` asks with SIGTERM first. Output is kept for failure messages.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { TEST_API_KEY, TEST_API_SECRET } from './sfu-harness.ts';

export const TONE_AGENT_DIR = fileURLToPath(new URL('../../examples/tone-agent/', import.meta.url));

export interface AgentWorkerProcess {
  readonly pid: number;
  /** The last lines the worker printed. */
  output(): string;
  readonly exited: Promise<number | null>;
  /** SIGKILL to the worker and its job processes. */
  kill(): Promise<void>;
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

export function startAgentWorker(opts: { wsUrl: string; agentName?: string; env?: Record<string, string> }): AgentWorkerProcess {
  const child: ChildProcess = spawn(process.execPath, ['agent.ts', 'dev', '--log-level', 'info'], {
    cwd: TONE_AGENT_DIR,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      LIVEKIT_URL: opts.wsUrl,
      LIVEKIT_API_KEY: TEST_API_KEY,
      LIVEKIT_API_SECRET: TEST_API_SECRET,
      ...(opts.agentName ? { LIVEKIT_AGENT_NAME: opts.agentName } : {}),
      NO_COLOR: '1',
      // Tests share a busy machine: report no load, or the SFU may find no worker with capacity.
      TONE_AGENT_LOAD: '0',
      ...opts.env,
    },
  });
  const lines: string[] = [];
  const keep = (chunk: Buffer) => {
    lines.push(...chunk.toString('utf8').split('\n'));
    if (lines.length > 200) lines.splice(0, lines.length - 200);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const pid = child.pid;
  if (pid === undefined) throw new Error('the agent worker did not start');
  const signalGroup = (sig: NodeJS.Signals) => {
    try {
      process.kill(-pid, sig);
    } catch {
      // already gone
    }
  };
  let done = false;
  exited.then(() => (done = true), () => undefined);
  return {
    pid,
    output: () => lines.join('\n'),
    exited,
    async kill() {
      signalGroup('SIGKILL');
      await exited;
    },
    async stop(graceMs = 5000) {
      if (!done) signalGroup('SIGTERM');
      const timer = setTimeout(() => signalGroup('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
      // Job processes that outlived the worker.
      signalGroup('SIGKILL');
    },
  };
}
