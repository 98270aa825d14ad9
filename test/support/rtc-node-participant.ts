/**
 * A LiveKit participant in its own process, so a test can crash it for real (SIGKILL: no
 * leave, no WebSocket close frame, the kernel just drops its sockets), as a browser tab that
 * dies does. `node test/support/rtc-node-participant.ts <wsUrl> <jwt>` joins with
 * @livekit/rtc-node, publishes a tone and prints `joined <identity>` once connected.
 * `spawnParticipant()` starts it and resolves when it has joined; the test kills it by pid
 * (`crash()`), and `stop()` (for cleanups) kills it if still running.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { connectRtcNode } from './rtc-node.ts';

export interface SpawnedParticipant {
  pid: number;
  identity: string;
  /** SIGKILL: the participant vanishes without a word; resolves when the process is gone. */
  crash(): Promise<void>;
  stop(): Promise<void>;
}

export async function spawnParticipant(wsUrl: string, jwt: string, timeoutMs = 15_000): Promise<SpawnedParticipant> {
  const child: ChildProcess = spawn(process.execPath, [fileURLToPath(import.meta.url), wsUrl, jwt], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const kill = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };
  try {
    const identity = await new Promise<string>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`participant did not join within ${timeoutMs} ms: ${err.trim()}`)), timeoutMs);
      child.stdout?.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /^joined (\S+)$/m.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`participant exited (${code}) before joining: ${err.trim()}`));
      });
    });
    return { pid: child.pid!, identity, crash: kill, stop: kill };
  } catch (e) {
    await kill();
    throw e;
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [wsUrl, jwt] = process.argv.slice(2);
  const client = await connectRtcNode(wsUrl!, jwt!);
  await client.publishTone(440);
  process.stdout.write(`joined ${client.identity}\n`);
  // Stays until killed.
  setInterval(() => undefined, 60_000);
}
