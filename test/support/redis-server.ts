/**
 * Starts a real Debian `redis-server` for a test: its own free loopback port, its own temporary
 * data directory, no persistence; `stop()` shuts it down and removes the directory. Requires
 * /usr/bin/redis-server (installed by `npm test` through test/setup/ensure-system-deps.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Socket } from 'node:net';
import { freePort } from './ports.ts';
import { waitFor } from './wait.ts';

export const REDIS_SERVER_BIN = '/usr/bin/redis-server';

export interface RunningRedis {
  url: string;
  port: number;
  /** Stops the server (SHUTDOWN NOSAVE, then SIGKILL if needed) and removes its directory. */
  stop(): Promise<void>;
}

async function ping(port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const sock = new Socket();
    sock.setTimeout(500);
    sock.once('error', () => resolve(false));
    sock.once('timeout', () => {
      sock.destroy();
      resolve(false);
    });
    sock.connect(port, '127.0.0.1', () => sock.write('PING\r\n'));
    sock.once('data', (d) => {
      sock.destroy();
      resolve(d.toString().startsWith('+PONG'));
    });
  });
}

/** `port`: a given port (to start Redis again where its clients expect it after a stop). */
export async function startRedisServer(opts: { port?: number } = {}): Promise<RunningRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'redis-test-'));
  const port = opts.port ?? (await freePort());
  const child: ChildProcess = spawn(
    REDIS_SERVER_BIN,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no', '--loglevel', 'warning'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    await waitFor(`redis-server on port ${port}`, async () => child.exitCode === null && (await ping(port)), {
      timeoutMs: 10_000,
    });
  } catch (err) {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`${(err as Error).message}; redis-server said: ${stderr.trim() || '(nothing)'}`, { cause: err });
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        const killer = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(killer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
